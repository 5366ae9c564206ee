"""Model registry: names, build, and one-line errors for bad names and options."""

import subprocess
import sys

import numpy as np
import pytest

import jaxvision.models as models
from jaxvision.errors import UserError


def test_names_sorted_naturally():
    names = models.names()
    assert names.index("resnet18") < names.index("resnet34") < names.index("resnet101")
    assert names.index("vgg16") < names.index("vgg16_bn") < names.index("vgg19")
    assert len(names) == len(set(names)) == 26


# Building every registered model (num_classes, dtype, float32 logits, the named classifier)
# is checked in tests/models/test_models_features.py, beside its feature maps: one trace of
# each model serves both.


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
