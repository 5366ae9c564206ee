"""The one run setup (jaxvision.train.setup.make_run) and the config's option groups and
registered wrappers (jaxvision.train.build, jaxvision.train.wrappers)."""

import ast
import os

import jax
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from jaxvision import models
from jaxvision.models.vit import ViT
from jaxvision.sharding import make_mesh
from jaxvision.tasks.classification import Classification
from jaxvision.train import build, optim, wrappers
from jaxvision.train.setup import NamedModel, make_run
from jaxvision.train.state import image_model_init, init_model_state
from tests.experiments.helpers import load_config

TRAIN = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "jaxvision", "train"
)
EXAMPLE = {"image": np.zeros((1, 8, 8, 1), np.uint8)}


def _run(named_models, task, sharding="replicated", mesh=None):
    return make_run(
        task,
        named_models,
        mesh=mesh or make_mesh([("data", 1)], devices=jax.devices()[:1]),
        sharding=sharding,
        seed=3,
        train_step=lambda state, batch: (state, {}),
        train_source=[],
        train_transform=None,
        eval_transform=None,
        evals=[],
        class_names=[],
        total_steps=1,
    )


@pytest.mark.slow
def test_one_model_takes_the_runs_key_and_keeps_its_optimizer_and_ema():
    task = Classification(models.build("simple_cnn", num_classes=10), mean=(0.0,), std=(1.0,))
    tx = optax.sgd(0.1)
    run = _run({"model": NamedModel(task.init_variables(EXAMPLE), tx, ema=True)}, task)
    state = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng)
    expected = init_model_state(task.init_variables(EXAMPLE), tx, jax.random.PRNGKey(3), ema=True)
    jax.tree.map(np.testing.assert_array_equal, state.models["model"], expected)
    assert int(state.step) == 0 and run.load_pretrained is None
    assert run.data_sharding.spec == P(("data",))
    assert jax.tree.structure(run.abstract_state) == jax.tree.structure(state)


def test_a_frozen_model_has_no_optimizer_state_and_gets_its_weights_placed():
    student = models.build("simple_cnn", num_classes=10)
    teacher = models.build("simple_cnn", num_classes=10, dropout_rate=0.1)
    task = Classification(student, mean=(0.0,), std=(1.0,), name="student")
    teacher_init = image_model_init(teacher, EXAMPLE["image"])
    weights = jax.device_get(teacher_init(jax.random.PRNGKey(7)))
    run = _run(
        {
            "student": NamedModel(task.init_variables(EXAMPLE), optax.sgd(0.1)),
            "teacher": NamedModel(teacher_init, weights=weights),
        },
        task,
    )
    state = jax.jit(run.init, out_shardings=run.state_sharding)(run.rng)
    # Two models split the run's key in order.
    student_rng, teacher_rng = jax.random.split(jax.random.PRNGKey(3))
    fresh = init_model_state(task.init_variables(EXAMPLE), optax.sgd(0.1), student_rng)
    jax.tree.map(np.testing.assert_array_equal, state.models["student"].variables, fresh.variables)
    assert state.models["teacher"].opt_state is None
    np.testing.assert_array_equal(state.models["teacher"].rng, jax.random.split(teacher_rng)[1])
    loaded = run.load_pretrained(state)
    jax.tree.map(np.testing.assert_array_equal, loaded.models["teacher"].variables, weights)
    jax.tree.map(np.testing.assert_array_equal, loaded.models["student"].variables, fresh.variables)


def test_tensor_parallel_reads_the_models_logical_axes():
    vit = ViT(
        num_classes=10, patch_size=4, width=32, depth=1, mlp_dim=64, num_heads=4, image_size=8
    )
    task = Classification(vit, mean=(0.0,), std=(1.0,))
    mesh = make_mesh([("data", 1), ("model", 1)], devices=jax.devices()[:1])
    tx = optim.make_optimizer("adamw", optax.constant_schedule(1e-3))
    run = _run({"model": NamedModel(task.init_variables(EXAMPLE), tx)}, task, "tensor", mesh)
    params = run.state_sharding.models["model"].variables["params"]
    assert params["blocks_0"]["mlp"]["fc1"]["kernel"].spec == P(None, "model")
    assert params["blocks_0"]["mlp"]["fc2"]["kernel"].spec == P("model", None)
    assert params["blocks_0"]["norm1"]["scale"].spec == P(None)
    mu = run.state_sharding.models["model"].opt_state[0][0].mu  # follows its parameter
    assert mu["blocks_0"]["mlp"]["fc1"]["kernel"].spec == P(None, "model")


def test_option_groups_read_the_config_once():
    config = load_config(
        "classification/simple_cnn_digits.py", batch_size=64, learning_rate=0.1, lr_batch_base=256
    )
    options = build.OptimizerOptions.from_config(config)
    assert options.learning_rate == pytest.approx(0.025)  # scaled to the global batch
    assert (options.name, options.schedule, options.linear_probe) == ("sgd", "cosine", None)
    assert options.wrappers == ()
    config.freeze_backbone = True
    assert build.OptimizerOptions.from_config(config).linear_probe == "fc2"
    model_options = build.ModelOptions.from_config(config)
    assert model_options.name == "simple_cnn" and model_options.kwargs == {"dropout_rate": 0.3}


def test_registered_wrappers_apply_only_when_the_config_sets_their_field(monkeypatch):
    monkeypatch.setattr(wrappers, "MODEL_WRAPPERS", {})
    monkeypatch.setattr(wrappers, "OPTIMIZER_WRAPPERS", {})
    seen = []

    @wrappers.register_model_wrapper("dropout_for_test")
    def with_dropout(model, value):
        seen.append(value)
        return model.clone(dropout_rate=0.5)

    @wrappers.register_optimizer_wrapper("extra_scale")
    def scale(tx, value):
        return optax.chain(tx, optax.scale(value))

    config = ml_collections.ConfigDict(
        {"model": "simple_cnn", "model_kwargs": {}, "dtype": "float32", "remat": False}
    )
    config.dropout_for_test = ""
    assert build.ModelOptions.from_config(config).wrappers == ()
    config.dropout_for_test = "yes"
    options = build.ModelOptions.from_config(config)
    assert options.wrappers == (("dropout_for_test", "yes"),)
    assert options.build(models, num_classes=10).dropout_rate == 0.5
    assert seen == ["yes"]

    tx = wrappers.wrap_optimizer(optax.sgd(1.0), (("extra_scale", 0.5),))
    params = {"w": np.ones(3, np.float32)}
    updates, _ = tx.update({"w": np.ones(3, np.float32)}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.5)


def test_compress_registers_qat_and_pruning_masks_and_train_never_imports_it():
    import jaxvision.compress.training  # noqa: F401

    assert "quantize_training" in wrappers.MODEL_WRAPPERS
    assert "prune_masks" in wrappers.OPTIMIZER_WRAPPERS
    for name in sorted(os.listdir(TRAIN)):
        if not name.endswith(".py"):
            continue
        with open(os.path.join(TRAIN, name)) as f:
            tree = ast.parse(f.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("jaxvision.compress") for n in names), (name, names)
