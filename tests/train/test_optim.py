"""Schedules and optimizers: warmup/cosine/linear/step values, weight-decay masks, LAMB and LARS
trust ratios, weight-decay modes, layer-wise LR decay, frozen parameters, bad names."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvision.errors import UserError
from jaxvision.models.vit import ViT
from jaxvision.train import optim


def test_warmup_cosine_schedule_values():
    schedule = optim.make_schedule("cosine", base_lr=0.4, total_steps=100, warmup_steps=10)
    np.testing.assert_allclose(schedule(0), 0.0, atol=1e-7)
    np.testing.assert_allclose(schedule(5), 0.2, rtol=1e-6)
    np.testing.assert_allclose(schedule(10), 0.4, rtol=1e-6)
    # Halfway through the cosine part the rate is half the peak.
    np.testing.assert_allclose(schedule(55), 0.2, rtol=1e-5)
    np.testing.assert_allclose(schedule(100), 0.0, atol=1e-7)


def test_constant_schedule_after_warmup():
    schedule = optim.make_schedule("constant", base_lr=0.1, total_steps=50, warmup_steps=4)
    np.testing.assert_allclose([schedule(2), schedule(4), schedule(49)], [0.05, 0.1, 0.1])


def test_decay_mask_skips_norms_and_biases():
    params = {
        "conv": {"kernel": jnp.ones((3, 3, 1, 4))},
        "bn": {"scale": jnp.ones(4), "bias": jnp.zeros(4)},
        "dense": {"kernel": jnp.ones((4, 2)), "bias": jnp.zeros(2)},
    }
    mask = optim.decay_mask(params)
    assert mask == {
        "conv": {"kernel": True},
        "bn": {"scale": False, "bias": False},
        "dense": {"kernel": True, "bias": False},
    }


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_weight_decay_shrinks_kernels_only(name):
    params = {"kernel": jnp.full((2, 2), 2.0), "bias": jnp.full((2,), 2.0)}
    tx = optim.make_optimizer(name, optax.constant_schedule(0.1), weight_decay=0.5)
    grads = {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros((2,))}
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    # sgd: g = 0.5 * 2 = 1, step = -0.1 * 1 (Nesterov's first step doubles: g + 0.9 g).
    # adamw: decoupled, -lr * wd * p = -0.1.
    expected_kernel = 2.0 - (0.19 if name == "sgd" else 0.1)
    np.testing.assert_allclose(new["kernel"], expected_kernel, rtol=1e-6)
    np.testing.assert_allclose(new["bias"], 2.0)


def test_gradient_clipping_bounds_the_update():
    params = {"w": jnp.zeros(4)}
    tx = optim.make_optimizer("sgd", optax.constant_schedule(1.0), momentum=0.0, grad_clip_norm=1.0)
    updates, _ = tx.update({"w": jnp.full(4, 10.0)}, tx.init(params), params)
    np.testing.assert_allclose(np.linalg.norm(updates["w"]), 1.0, rtol=1e-6)


def test_unknown_names_raise_user_error():
    with pytest.raises(UserError, match="unknown optimizer 'lion': choose one of sgd, adamw"):
        optim.make_optimizer("lion", optax.constant_schedule(0.1))
    with pytest.raises(UserError, match="unknown schedule 'poly'"):
        optim.make_schedule("poly", base_lr=0.1, total_steps=10)
    with pytest.raises(UserError, match="unknown weight_decay_mode 'l1'"):
        optim.make_optimizer("adamw", optax.constant_schedule(0.1), weight_decay_mode="l1")


def test_linear_schedule_values():
    schedule = optim.make_schedule("linear", base_lr=1.0, total_steps=100, warmup_steps=10)
    values = [schedule(s) for s in (0, 5, 10, 55, 100)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-6)


def test_step_schedule_values():
    schedule = optim.make_schedule(
        "step", base_lr=1.0, total_steps=100, warmup_steps=10, boundaries=(0.3, 0.6, 0.9)
    )
    steps = [0, 5, 10, 29, 30, 59, 60, 90, 99]
    expected = [0.0, 0.5, 1.0, 1.0, 0.1, 0.1, 0.01, 0.001, 0.001]
    np.testing.assert_allclose([schedule(s) for s in steps], expected, rtol=1e-6, atol=1e-9)
    # Under jit too, where the step is traced.
    np.testing.assert_allclose(jax.jit(schedule)(jnp.int32(60)), 0.01, rtol=1e-6)


def test_decay_mask_skips_multidimensional_biases():
    # A ViT's query bias is [heads, head_dim]: a bias all the same.
    params = {"query": {"kernel": jnp.ones((4, 2, 2)), "bias": jnp.zeros((2, 2))}}
    assert optim.decay_mask(params) == {"query": {"kernel": True, "bias": False}}


def _tiny_layer():
    w = jnp.array([[1.0, -2.0], [0.5, 3.0]])
    b = jnp.array([0.5, -1.0])
    gw = jnp.array([[0.1, 0.2], [-0.3, 0.4]])
    gb = jnp.array([0.2, -0.6])
    params = {"dense": {"kernel": w, "bias": b}, "out": {"kernel": 2 * w}}
    grads = {"dense": {"kernel": gw, "bias": gb}, "out": {"kernel": -gw}}
    return params, grads


def _one_step(tx, params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return updates


def test_lars_trust_ratio_per_layer_skips_biases():
    params, grads = _tiny_layer()
    lr, wd, coef = 0.5, 0.1, 0.001
    tx = optim.make_optimizer(
        "lars", optax.constant_schedule(lr), weight_decay=wd, nesterov=False, trust_coefficient=coef
    )
    updates = _one_step(tx, params, grads)
    for layer in ("dense", "out"):
        w, g = np.asarray(params[layer]["kernel"]), np.asarray(grads[layer]["kernel"])
        u = g + wd * w  # first momentum step: the trace is the update itself
        expected = -lr * coef * np.linalg.norm(w) / np.linalg.norm(u) * u
        np.testing.assert_allclose(updates[layer]["kernel"], expected, rtol=1e-5)
    # The bias gets neither decay nor a trust ratio: plain -lr * g.
    np.testing.assert_allclose(updates["dense"]["bias"], -lr * grads["dense"]["bias"], rtol=1e-6)
    # The same as optax.lars given the same masks.
    reference = optax.lars(
        lr,
        weight_decay=wd,
        weight_decay_mask=optim.decay_mask,
        trust_coefficient=coef,
        trust_ratio_mask=optim.decay_mask,
        nesterov=False,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
        updates,
        _one_step(reference, params, grads),
    )


def test_lamb_trust_ratio_per_layer_skips_biases():
    params, grads = _tiny_layer()
    lr, wd, eps = 0.5, 0.1, 1e-6
    tx = optim.make_optimizer("lamb", optax.constant_schedule(lr), weight_decay=wd, eps=eps)
    updates = _one_step(tx, params, grads)
    for layer in ("dense", "out"):
        w, g = np.asarray(params[layer]["kernel"]), np.asarray(grads[layer]["kernel"])
        adam = g / (np.abs(g) + eps)  # first bias-corrected Adam step: m = g, v = g^2
        u = adam + wd * w
        expected = -lr * np.linalg.norm(w) / np.linalg.norm(u) * u
        # float32 Adam (bias corrections, sqrt) against float64 here.
        np.testing.assert_allclose(updates[layer]["kernel"], expected, rtol=1e-4)
    gb = np.asarray(grads["dense"]["bias"])
    np.testing.assert_allclose(updates["dense"]["bias"], -lr * gb / (np.abs(gb) + eps), rtol=1e-5)


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_l2_and_decoupled_weight_decay_differ_as_expected(name):
    # One Adam step normalises the gradient to its sign: decoupled decay adds wd * w after that,
    # l2 adds it before, where the normalisation swallows it.
    params = {"kernel": jnp.full((2, 2), 2.0)}
    grads = {"kernel": jnp.full((2, 2), 3.0)}
    lr, wd = 0.1, 0.5
    steps = {}
    for mode in ("decoupled", "l2"):
        tx = optim.make_optimizer(
            name, optax.constant_schedule(lr), weight_decay=wd, weight_decay_mode=mode
        )
        steps[mode] = _one_step(tx, params, grads)["kernel"]
    if name == "adamw":
        np.testing.assert_allclose(steps["decoupled"], -lr * (1.0 + wd * 2.0), rtol=1e-5)
        np.testing.assert_allclose(steps["l2"], -lr * 1.0, rtol=1e-5)
    else:
        # LAMB's trust ratio rescales each to lr * ||w||: the directions are the same here, so
        # both equal -lr * w; the difference shows in the Adam moments, checked via state.
        np.testing.assert_allclose(steps["decoupled"], -lr * 2.0, rtol=1e-6)
        np.testing.assert_allclose(steps["l2"], -lr * 2.0, rtol=1e-6)
        tx = optim.make_optimizer(
            name, optax.constant_schedule(lr), weight_decay=wd, weight_decay_mode="l2"
        )
        _, state = tx.update(grads, tx.init(params), params)
        mu = [x for x in jax.tree.leaves(state) if x.shape == (2, 2)][0]
        np.testing.assert_allclose(mu, 0.1 * (3.0 + wd * 2.0), rtol=1e-6)  # (1 - b1) (g + wd w)


def _tiny_vit_params():
    model = ViT(
        num_classes=3, patch_size=4, width=8, depth=2, mlp_dim=16, num_heads=2, image_size=8
    )
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    return nn.meta.unbox(shapes["params"])


def test_layer_decay_multipliers_for_a_two_block_vit():
    params = _tiny_vit_params()
    multipliers = optim.layer_decay_multipliers(params, decay=0.5, num_layers=2)
    flat = {
        optim.param_path(path): m
        for path, m in jax.tree_util.tree_flatten_with_path(multipliers)[0]
    }
    expected_by_top = {
        "patch_embed": 0.125,
        "cls_token": 0.125,
        "pos_embed": 0.125,
        "blocks_0": 0.25,
        "blocks_1": 0.5,
        "norm": 1.0,
        "head": 1.0,
    }
    assert {name.split("/")[0] for name in flat} == set(expected_by_top)
    for name, m in flat.items():
        assert m == expected_by_top[name.split("/")[0]], name
    assert flat["blocks_1/mlp/fc1/kernel"] == 0.5
    assert flat["patch_embed/proj/kernel"] == 0.125


def test_layer_decay_scales_the_updates_and_rejects_non_vits():
    params = {"blocks_0": {"kernel": jnp.ones((2, 2))}, "head": {"kernel": jnp.ones((2, 2))}}
    multipliers = optim.layer_decay_multipliers(params, decay=0.1, num_layers=1)
    assert multipliers == {"blocks_0": {"kernel": pytest.approx(0.1)}, "head": {"kernel": 1.0}}
    tx = optim.make_optimizer(
        "sgd", optax.constant_schedule(1.0), momentum=0.0, lr_multipliers=multipliers
    )
    grads = jax.tree.map(jnp.ones_like, params)
    updates = _one_step(tx, params, grads)
    np.testing.assert_allclose(updates["blocks_0"]["kernel"], -0.1, rtol=1e-6)
    np.testing.assert_allclose(updates["head"]["kernel"], -1.0, rtol=1e-6)
    with pytest.raises(UserError, match="needs a ViT parameter tree"):
        optim.layer_decay_multipliers({"conv": {"kernel": jnp.ones((2, 2))}}, 0.5, 2)
    with pytest.raises(UserError, match="past num_layers=1"):
        optim.layer_decay_multipliers({"blocks_1": {"kernel": jnp.ones((2, 2))}}, 0.5, 1)


@pytest.mark.parametrize("name", ["sgd", "adamw", "lamb", "lars"])
def test_frozen_parameters_stay_while_the_head_trains(name):
    params = {
        "backbone": {"kernel": jnp.full((3, 3), 0.5), "bias": jnp.full((3,), 0.1)},
        "head": {"kernel": jnp.full((3, 2), 0.5), "bias": jnp.zeros((2,))},
    }
    grads = jax.tree.map(jnp.ones_like, params)
    tx = optim.make_optimizer(
        name,
        optax.constant_schedule(0.1),
        weight_decay=0.1,
        grad_clip_norm=1.0,
        frozen=optim.frozen_except("head"),
    )
    state = tx.init(params)
    new = params
    for _ in range(2):
        updates, state = tx.update(grads, state, new)
        new = optax.apply_updates(new, updates)
    np.testing.assert_array_equal(new["backbone"]["kernel"], params["backbone"]["kernel"])
    np.testing.assert_array_equal(new["backbone"]["bias"], params["backbone"]["bias"])
    assert np.all(np.asarray(new["head"]["kernel"]) < 0.5)
    assert np.all(np.asarray(new["head"]["bias"]) < 0.0)
    # No moments are kept for the frozen leaves: every state array is a head-sized one or a scalar.
    assert {x.shape for x in jax.tree.leaves(state)} <= {(3, 2), (2,), ()}


def test_frozen_as_a_tree_of_bools():
    params = {"a": jnp.ones(2), "b": jnp.ones(2)}
    tx = optim.make_optimizer(
        "sgd", optax.constant_schedule(1.0), momentum=0.0, frozen={"a": True, "b": False}
    )
    updates = _one_step(tx, params, jax.tree.map(jnp.ones_like, params))
    np.testing.assert_array_equal(updates["a"], 0.0)
    np.testing.assert_allclose(updates["b"], -1.0)


def test_a_warmup_longer_than_the_run_is_said(capsys):
    from jaxvision.train import build

    options = build.OptimizerOptions(name="sgd", learning_rate=0.1, warmup_epochs=1000.0)
    _, schedule, _ = build.optimizer(options, None, None, total_steps=30, steps_per_epoch=1000)
    # The warmup is cut to the run: the last step (29) is at the peak, nothing decays.
    np.testing.assert_allclose([schedule(0), schedule(29)], [0.0, 0.1], rtol=1e-6)
    assert capsys.readouterr().err == (
        "warmup_epochs=1000 is 1,000,000 steps, not fewer than the run's 30: the learning rate "
        "rises over the whole run to its peak 0.1 at the last step and never decays; for a "
        "decay set warmup_epochs below 0.03\n"
    )
    # A warmup that ends before the run does says nothing.
    options = build.OptimizerOptions(name="sgd", learning_rate=0.1, warmup_epochs=0.02)
    build.optimizer(options, None, None, total_steps=30, steps_per_epoch=1000)
    assert capsys.readouterr().err == ""
