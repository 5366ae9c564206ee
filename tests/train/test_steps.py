"""Train/eval steps: the loss goes down, metrics equal hand computations, masks are honoured."""

from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn

from jaxvision import models
from jaxvision.evaluation.classification import ClassificationEvaluator
from jaxvision.sharding import batch_sharding, make_mesh, replicated
from jaxvision.tasks.classification import Classification, LossOptions, Mixing
from jaxvision.tasks.images import normalize
from jaxvision.train import optim, steps
from jaxvision.train.losses import cross_entropy, topk_correct
from jaxvision.train.state import init_model_state, init_train_state

MEAN, STD = (127.5,), (64.0,)


def _task(model, loss: LossOptions | None = None):
    return Classification(model, mean=MEAN, std=STD, loss=loss or LossOptions())


def _init(task, tx, image_shape=(8, 8, 1)):
    example = {"image": np.zeros((1, *image_shape), np.uint8)}
    model_state = init_model_state(task.init_variables(example), tx, jax.random.PRNGKey(0))
    return init_train_state({"model": model_state})


def _params(state):
    return state.models["model"].params


def _batch(n=32, seed=0, num_classes=10):
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
        "label": rng.integers(0, num_classes, (n,), dtype=np.int32),
    }


def _setup(model_name="simple_cnn", lr=1e-3, **model_kwargs):
    model = models.build(model_name, num_classes=10, **model_kwargs)
    tx = optim.make_optimizer("adamw", optax.constant_schedule(lr), weight_decay=1e-4)
    task = _task(model)
    return task, tx, _init(task, tx)


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_name,kwargs", [("simple_cnn", {}), ("resnet18", {"stem": "small", "width": 8})]
)
def test_train_step_lowers_loss_on_a_fixed_batch(model_name, kwargs):
    task, tx, state = _setup(model_name, lr=3e-3, **kwargs)
    step = jax.jit(steps.make_train_step(task, tx))
    batch = _batch()
    losses = []
    for _ in range(25):
        state, metrics = step(state, batch)
        losses.append(float(metrics["train/loss"]))
    assert int(state.step) == 25
    assert int(state.models["model"].step) == 25
    assert losses[0] > 2.0  # ~ln(10) at initialisation
    assert losses[-1] < 0.5 * losses[0], losses


def test_train_step_updates_batch_stats():
    # The program of the ResNet case above (same model and learning rate): one compile.
    task, tx, state = _setup("resnet18", lr=3e-3, stem="small", width=8)
    step = jax.jit(steps.make_train_step(task, tx))
    new_state, _ = step(state, _batch())
    before = jax.tree.leaves(state.models["model"].variables["batch_stats"])
    after = jax.tree.leaves(new_state.models["model"].variables["batch_stats"])
    assert before  # the model has BatchNorm statistics
    assert any(not np.allclose(a, b) for a, b in zip(before, after, strict=True))


def test_train_step_reports_learning_rate_of_the_step_taken():
    task, _, _ = _setup()
    schedule = optax.linear_schedule(1.0, 0.0, 10)
    tx = optim.make_optimizer("sgd", schedule)
    state = _init(task, tx)
    step = jax.jit(steps.make_train_step(task, tx, steps.UpdateOptions(learning_rate=schedule)))
    state, m0 = step(state, _batch())
    state, m1 = step(state, _batch())
    np.testing.assert_allclose([m0["train/lr"], m1["train/lr"]], [1.0, 0.9], rtol=1e-6)


def test_cross_entropy_with_label_smoothing_matches_hand_computation():
    logits = jnp.array([[2.0, 0.0, -1.0]])
    labels = jnp.array([0])
    logp = np.log(np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum())
    target = np.array([1 - 0.3 + 0.1, 0.1, 0.1])
    expected = -(target * logp).sum()
    got = cross_entropy(logits, labels, label_smoothing=0.3)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)
    np.testing.assert_allclose(cross_entropy(logits, labels), [-logp[0]], rtol=1e-6)


def test_topk_correct_against_numpy():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(64, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 64)
    order = np.argsort(-logits, axis=1)
    for k in (1, 5):
        expected = (order[:, :k] == labels[:, None]).any(axis=1)
        np.testing.assert_array_equal(topk_correct(logits, labels, k), expected)
    # Fewer classes than k: every label is in the top k.
    np.testing.assert_array_equal(topk_correct(logits[:, :3], labels % 3, 5), 1.0)


def test_eval_step_ignores_padded_examples():
    task, _, state = _setup()
    eval_step = jax.jit(steps.make_eval_step(task))
    batch = _batch(16)
    full = eval_step(state, {**batch, "mask": np.ones(16, bool)})
    # Same first 10 examples, the rest replaced by garbage and masked out.
    padded = {k: v.copy() for k, v in batch.items()}
    padded["image"][10:] = 255
    padded["label"][10:] = 0
    mask = np.arange(16) < 10
    part = eval_step(state, {**padded, "mask": mask})
    first10 = eval_step(state, {k: v[:10] for k, v in batch.items()} | {"mask": np.ones(10, bool)})
    assert float(part["count"]) == 10
    for key in ("loss", "top1", "top5"):
        np.testing.assert_allclose(part[key], first10[key], rtol=1e-5)
    np.testing.assert_array_equal(part["confusion"], first10["confusion"])
    evaluator = ClassificationEvaluator([str(k) for k in range(10)])
    evaluator.add(full)
    summary = evaluator.result("eval")
    assert set(summary) == {
        "eval/loss",
        "eval/top1",
        "eval/top5",
        "eval/macro_precision",
        "eval/macro_recall",
        "eval/macro_f1",
    }
    assert 0.0 <= summary["eval/top1"] <= summary["eval/top5"] <= 1.0


def test_jitted_step_with_shardings_donates_state_and_compiles_once():
    task, tx, state = _setup()
    mesh = make_mesh()
    state_sharding = jax.tree.map(lambda _: replicated(mesh), state)
    state = jax.device_put(state, state_sharding)
    step = steps.jit_train_step(
        steps.make_train_step(task, tx),
        mesh,
        state_sharding,
        batch_sharding(mesh),
    )
    old_params = jax.tree.leaves(_params(state))[0]
    for seed in range(3):
        state, _ = step(state, _batch(seed=seed))
    assert old_params.is_deleted()  # donated
    assert step._cache_size() == 1


@pytest.mark.slow
def test_gradient_accumulation_equals_one_big_batch():
    task, _, _ = _setup()
    tx = optim.make_optimizer("sgd", optax.constant_schedule(0.1), momentum=0.9)
    state = _init(task, tx)
    big = jax.jit(steps.make_train_step(task, tx))
    accumulated = jax.jit(steps.make_train_step(task, tx, steps.UpdateOptions(microbatches=4)))
    batch = _batch(32)
    s1, m1 = big(state, batch)
    s4, m4 = accumulated(state, batch)
    np.testing.assert_allclose(m4["train/loss"], m1["train/loss"], rtol=1e-5)
    np.testing.assert_allclose(m4["train/grad_norm"], m1["train/grad_norm"], rtol=1e-4)
    for a, b in zip(jax.tree.leaves(_params(s1)), jax.tree.leaves(_params(s4)), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_microbatches_are_strided_slices():
    batch = {"x": np.arange(12)}
    split = steps.split_microbatches(batch, 3)["x"]
    np.testing.assert_array_equal(split, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
    with pytest.raises(ValueError, match="does not split into 5"):
        steps.split_microbatches(batch, 5)


@pytest.mark.slow
def test_vit_remat_gives_the_same_gradients():
    from jaxvision.models.vit import ViT

    # One block (each block is rematerialised alike), with drop path: its random draws must
    # repeat in the recomputed forward pass.
    vits = [
        ViT(
            num_classes=5,
            patch_size=4,
            width=32,
            depth=1,
            mlp_dim=64,
            num_heads=2,
            image_size=8,
            drop_path_rate=0.1,
            remat=remat,
        )
        for remat in (False, True)
    ]

    @jax.jit  # both models' gradients in one program, not one per model or operation
    def gradients():
        x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
        grads = []
        for model in vits:
            variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 8, 8, 1)))
            params = nn.meta.unbox(variables)["params"]

            def loss(p, model=model):
                logits = model.apply(
                    {"params": p}, x, train=True, rngs={"dropout": jax.random.key(2)}
                )
                return cross_entropy(logits, jnp.array([1, 3])).sum()

            grads.append(jax.grad(loss)(params))
        return grads

    grads = gradients()
    for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads[0])) > 0


@pytest.mark.slow
def test_class_weights_weight_the_loss():
    task, tx, state = _setup()
    model = task.model
    batch = _batch(16)
    plain = jax.jit(steps.make_train_step(task, tx))
    weights = np.ones(10, np.float32)
    weights[3] = 5.0
    weighted_task = _task(model, LossOptions(class_weights=tuple(float(w) for w in weights)))
    weighted = jax.jit(steps.make_train_step(weighted_task, tx))
    _, m_plain = plain(state, batch)
    _, m_weighted = weighted(state, batch)
    # By hand: per-example losses at the initial params, weighted mean.
    images = normalize(batch["image"], MEAN, STD)
    logits = model.apply({"params": _params(state)}, images)
    losses = np.asarray(cross_entropy(logits, batch["label"]))
    w = weights[batch["label"]]
    np.testing.assert_allclose(m_weighted["train/loss"], (w * losses).sum() / w.sum(), rtol=1e-5)
    np.testing.assert_allclose(m_plain["train/loss"], losses.mean(), rtol=1e-5)


@pytest.mark.slow
def test_mixing_in_the_step_changes_the_loss_and_still_learns():
    task, tx, state = _setup(lr=3e-3)
    # Mixup only: its lambda ~ Beta(0.8, 0.8) is < 1 (a CutMix box can come out empty).
    mixing = Mixing(mixup_alpha=0.8, cutmix_alpha=0.0, switch_prob=0.0, prob=1.0)
    step = jax.jit(steps.make_train_step(_task(task.model, LossOptions(mixing=mixing)), tx))
    plain = jax.jit(steps.make_train_step(task, tx))
    batch = _batch()
    _, m_mixed = step(state, batch)
    _, m_plain = plain(state, batch)
    assert float(m_mixed["train/loss"]) != float(m_plain["train/loss"])
    losses = []
    for _ in range(30):
        state, metrics = step(state, batch)
        losses.append(float(metrics["train/loss"]))
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


@pytest.mark.slow
def test_frozen_backbone_skips_its_backward_pass():
    """A linear probe: the head's update equals the full-gradient one, the backbone stays put,
    and XLA's FLOP count of the step drops to about the forward pass."""
    task = _task(models.build("resnet18", num_classes=10, stem="small", width=8))
    frozen = optim.frozen_except("fc")
    tx = optim.make_optimizer("sgd", optax.constant_schedule(0.1), frozen=frozen)
    state = _init(task, tx)
    batch = _batch()
    full = jax.jit(steps.make_train_step(task, tx))
    probe = jax.jit(steps.make_train_step(task, tx, steps.UpdateOptions(frozen=frozen)))

    (full_state, full_metrics), (probe_state, metrics) = full(state, batch), probe(state, batch)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # noqa: E731
    jax.tree.map(close, _params(probe_state)["fc"], _params(full_state)["fc"])
    for name in ("conv1", "layer1_0", "layer4_1"):
        jax.tree.map(
            np.testing.assert_array_equal, _params(probe_state)[name], _params(state)[name]
        )
    # The reported norm is the head's gradient alone.
    assert 0.0 < float(metrics["train/grad_norm"]) < float(full_metrics["train/grad_norm"])

    def flops(step):
        return step.lower(state, batch).compile().cost_analysis()["flops"]

    assert flops(probe) < 0.6 * flops(full)


class _TwoHeads(nn.Module):
    """A classifier with an auxiliary head that, like GoogLeNet's, answers only in training."""

    num_classes: int = 10
    classifier: ClassVar[str] = "fc"
    aux_loss_weight: ClassVar[float] = 0.3

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1)
        logits = nn.Dense(self.num_classes, name="fc")(x)
        aux = nn.Dense(self.num_classes, name="aux")(x)
        return (logits, aux) if train else logits


def test_auxiliary_heads_add_their_weighted_loss():
    model = _TwoHeads()
    task = _task(model)
    tx = optax.sgd(0.1)
    state = _init(task, tx)
    batch = _batch(16)
    _, metrics = jax.jit(steps.make_train_step(task, tx))(state, batch)
    images = normalize(batch["image"], MEAN, STD)
    logits, aux = model.apply({"params": _params(state)}, images, train=True)
    main_loss = np.mean(cross_entropy(logits, batch["label"]))
    aux_loss = np.mean(cross_entropy(aux, batch["label"]))
    np.testing.assert_allclose(metrics["train/loss"], main_loss + 0.3 * aux_loss, rtol=1e-5)
    top1 = np.mean(np.argmax(logits, -1) == batch["label"])
    np.testing.assert_allclose(metrics["train/top1"], top1)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["googlenet", "inception_v3"])
def test_models_with_aux_logits_train(name):
    """torchvision's aux heads train (traced abstractly: shapes and the loss, no compile)."""
    model = models.build(name, num_classes=10, aux_logits=True)
    task = Classification(model, mean=(0.0,) * 3, std=(1.0,) * 3)
    tx = optax.sgd(0.1)
    size = 75 if name == "inception_v3" else 32
    state = jax.eval_shape(lambda: _init(task, tx, (size, size, 3)))
    batch = {
        "image": jax.ShapeDtypeStruct((2, size, size, 3), jnp.uint8),
        "label": jax.ShapeDtypeStruct((2,), jnp.int32),
    }
    step = steps.make_train_step(task, tx)
    new_state, metrics = jax.eval_shape(step, state, batch)
    assert metrics["train/loss"].shape == () and _params(new_state).keys() == _params(state).keys()
    assert model.aux_loss_weight == {"googlenet": 0.3, "inception_v3": 0.4}[name]
