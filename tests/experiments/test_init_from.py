"""Initialising an experiment from a weight file (init_from), with the same or a new head."""

import jax
import numpy as np
import pytest

from experiments.classification import train_and_evaluate
from jaxvision import models, weights
from jaxvision.checkpoint import load_variables
from jaxvision.errors import UserError
from jaxvision.tasks.classification import Classification
from jaxvision.train import build, optim
from jaxvision.train.state import abstract_params
from tests.experiments.helpers import load_config


def _digits_config(**overrides):
    return load_config("classification/resnet18_digits.py", **overrides)


# One step that changes no weight: every such run here (and tests/weights/test_weights_hub.py's)
# is one compiled program, whatever it starts from.
ONE_STEP = dict(total_steps=1, learning_rate=0.0, warmup_epochs=0.0)


@pytest.fixture(scope="module")
def source(session_cache):
    """(workdir, final metrics, weight file) of a digits ResNet-18 (small stem, width 16)
    trained 60 steps, its weights exported with torch names: built once per test session."""

    def build(folder):
        final = train_and_evaluate(
            _digits_config(total_steps=60, log_every_steps=30), f"{folder}/source"
        )
        variables, _ = load_variables(f"{folder}/source")
        path = f"{folder}/digits_resnet18.safetensors"
        weights.save_safetensors(path, weights.export_weights("resnet18", variables))
        return final

    folder, final = session_cache.get("init_from_source", build)
    return f"{folder}/source", final, f"{folder}/digits_resnet18.safetensors"


@pytest.mark.slow
def test_init_from_weights_then_new_head(tmp_path, capsys, source):
    path = source[2]
    # Same classes: one step at learning rate 0 keeps the pretrained accuracy.
    final = train_and_evaluate(_digits_config(init_from=path, **ONE_STEP), str(tmp_path / "same"))
    assert final["eval/top1"] > 0.8
    scratch = train_and_evaluate(_digits_config(**ONE_STEP), str(tmp_path / "scratch"))
    assert scratch["eval/top1"] < 0.5

    # A new head: the backbone is imported, the classifier starts fresh.
    config = _digits_config(init_from=path, init_new_head=True, **ONE_STEP)
    train_and_evaluate(config, str(tmp_path / "new_head"))
    err = capsys.readouterr().err
    assert f"initialised resnet18 from {path} (classifier kept fresh: params/fc/bias" in err
    assert np.isfinite(final["eval/loss"])


@pytest.mark.slow
def test_init_from_another_runs_workdir(tmp_path, capsys, source):
    workdir, trained, _ = source
    config = _digits_config(init_from=workdir, **ONE_STEP)
    final = train_and_evaluate(config, str(tmp_path / "finetune"))
    # One step at learning rate 0: the source run's accuracy carries over.
    assert abs(final["eval/top1"] - trained["eval/top1"]) < 0.05
    err = capsys.readouterr().err
    assert f"initialised resnet18 from {workdir} (step 60)" in err

    # A new head on the same architecture: everything but the classifier comes from the run.
    config.init_new_head = True
    train_and_evaluate(config, str(tmp_path / "new_head"))
    assert "classifier kept fresh: params/fc/bias, params/fc/kernel" in capsys.readouterr().err


@pytest.mark.slow
def test_linear_probe_trains_the_head_alone(tmp_path, source):
    """freeze_backbone on imported weights with a fresh head: only `fc` moves, and it learns."""
    path = source[2]
    config = _digits_config(
        init_from=path, init_new_head=True, freeze_backbone=True, total_steps=60, warmup_epochs=0.0
    )
    final = train_and_evaluate(config, str(tmp_path / "probe"))
    assert final["eval/top1"] > 0.8  # a fresh linear head on pretrained features

    trained, _ = load_variables(str(tmp_path / "probe"))
    model = models.build("resnet18", num_classes=10, stem="small", width=16)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32))
    imported, _ = weights.load_weights(
        path, "resnet18", jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    )
    for name in ("conv1", "layer1_0", "layer4_1"):
        jax.tree.map(
            np.testing.assert_array_equal, trained["params"][name], imported["params"][name]
        )
    assert not np.allclose(trained["params"]["fc"]["kernel"], imported["params"]["fc"]["kernel"])


@pytest.mark.parametrize("name", ["vgg16", "densenet121", "vit_ti16"])
def test_linear_probe_trains_each_models_own_classifier(name):
    """freeze_backbone leaves exactly the model's classifier trainable, whatever it is named."""
    config = _digits_config(model=name, freeze_backbone=True, image_size=32)
    config.model_kwargs = {}
    model = models.build(name, num_classes=10, **build.model_options(config))
    options = build.OptimizerOptions.from_config(config)
    _, _, frozen = build.optimizer(options, model, (32, 32, 1), total_steps=10, steps_per_epoch=1)
    mask = optim.frozen_mask(frozen, abstract_params(model, (32, 32, 1)))
    trainable = sorted(k for k, v in mask.items() if not all(jax.tree.leaves(v)))
    assert trainable == [models.classifier(name)]
    assert not any(jax.tree.leaves(mask[models.classifier(name)]))


def _fresh_file(tmp_path, name: str, change) -> str:
    """The digits ResNet-18's variables with torch names, every one 1 (the shapes alone are
    computed: nothing compiles), each float tensor `change`d."""
    model = models.build("resnet18", num_classes=10, stem="small", width=16)
    task = Classification(model, mean=(0.0,), std=(1.0,))
    init = task.init_variables({"image": np.zeros((1, 8, 8, 1), np.uint8)})
    shapes = jax.eval_shape(init, jax.random.PRNGKey(0))
    variables = jax.tree.map(lambda s: np.ones(s.shape, s.dtype), shapes)
    tensors = weights.export_weights("resnet18", variables)
    path = str(tmp_path / name)
    weights.save_safetensors(
        path, {k: change(v) if v.dtype == np.float32 else v for k, v in tensors.items()}
    )
    return path


@pytest.mark.slow
def test_a_weight_file_of_integers_is_refused_by_name(tmp_path):
    # Cast to float32 they would be whole numbers: the run would train from all-zero weights.
    path = _fresh_file(tmp_path, "int64.safetensors", lambda v: v.astype(np.int64))
    with pytest.raises(UserError, match=r"^weights for resnet18: params/\S+ is stored as int64"):
        train_and_evaluate(_digits_config(init_from=path, total_steps=2), str(tmp_path / "w"))


def test_a_loss_that_is_not_finite_from_imported_weights_names_the_file(tmp_path):
    path = _fresh_file(tmp_path, "huge.safetensors", lambda v: v * np.float32(1e38))
    with pytest.raises(UserError) as raised:
        train_and_evaluate(_digits_config(init_from=path, **ONE_STEP), str(tmp_path / "w"))
    message = str(raised.value)
    assert f"1 step after loading the weights of --config.init_from={path}" in message
    assert "Lower the learning rate" not in message
