"""Model registry: names, build, and one-line errors for bad names and options."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvision.models as models
from jaxvision.errors import UserError


def test_names_sorted_naturally():
    names = models.names()
    assert names.index("resnet18") < names.index("resnet34") < names.index("resnet101")
    assert names.index("vgg16") < names.index("vgg16_bn") < names.index("vgg19")
    assert len(names) == len(set(names)) == 26


def _input_size(name):
    """Smallest convenient input: Inception v3 needs 75 px, patch-14 ViTs a multiple of 14."""
    if name == "inception_v3":
        return 75, {}
    if "image_size" in models.options(name):
        size = 28 if name.endswith("14") else 32
        return size, {"image_size": size}
    return 32, {}


@pytest.mark.parametrize("name", models.names())
def test_build_every_model(name):
    size, kwargs = _input_size(name)
    model = models.build(name, num_classes=7, dtype=jnp.bfloat16, **kwargs)
    assert model.num_classes == 7 and model.dtype == jnp.bfloat16
    images = jnp.zeros((2, size, size, 3))
    variables = jax.eval_shape(model.init, jax.random.key(0), images)
    logits = jax.eval_shape(model.apply, variables, images)
    assert (logits.shape, logits.dtype) == ((2, 7), jnp.float32)
    # The named classifier is the module that maps to the classes (what a linear probe trains).
    head = variables["params"][models.classifier(name)]
    assert head["kernel"].shape[-1] == 7 and head["bias"].shape == (7,)


def test_build_passes_options():
    model = models.build("resnet18", num_classes=10, width=16, stem="small")
    assert (model.width, model.stem) == (16, "small")
    assert models.build("simple_cnn", num_classes=10, dropout_rate=0.1).dropout_rate == 0.1


def test_unknown_model_lists_valid_names():
    with pytest.raises(UserError) as info:
        models.build("resnet51", num_classes=10)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("unknown model 'resnet51': choose one of densenet121, ")
    assert all(name in message for name in models.names())


def test_unknown_option_names_keyword_and_model():
    with pytest.raises(UserError) as info:
        models.build("resnet18", num_classes=10, widht=16)
    message = str(info.value)
    assert "\n" not in message
    assert "'widht'" in message and "'resnet18'" in message and "width" in message


def test_options_fixed_by_preset_are_rejected():
    # resnet18's depth is its name; overriding it would silently build another model.
    assert "stage_sizes" not in models.options("resnet18")
    with pytest.raises(UserError, match="stage_sizes"):
        models.build("resnet18", num_classes=10, stage_sizes=(1, 1, 1, 1))


def test_bad_num_classes():
    with pytest.raises(UserError, match="num_classes"):
        models.build("simple_cnn", num_classes=0)


def test_no_tensorflow_import():
    code = "import sys, jaxvision.models; print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_numpy_num_classes_becomes_int():
    assert models.build("simple_cnn", num_classes=np.int64(5)).num_classes == 5
