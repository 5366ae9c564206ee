"""FCOS's torchvision weight names without torch: torchvision's state-dict names and shapes
(stored by fixtures/make_fcos_state_dicts.py), export → import round trips, new heads and
classification backbones. tests/weights/test_parity_fcos.py checks outputs against torch."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.weights import export_weights, import_weights
from jaxvision.weights.common import flatten

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
with open(os.path.join(FIXTURES, "fcos_state_dicts.json")) as f:
    TORCHVISION_STATE_DICTS = json.load(f)
SMALL = "fcos_resnet18_fpn_small"


def random_variables(model, shape=(1, 64, 64, 3), seed=0):
    """Variables shaped like model.init's, filled from numpy (nothing is compiled)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), abstract)


@pytest.mark.parametrize("reference", sorted(TORCHVISION_STATE_DICTS))
def test_full_size_export_names_and_shapes_are_torchvisions(reference):
    model_name, norm = reference.split()
    model = detection.build(model_name, num_classes=91, norm=norm)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    exported = export_weights(model_name, zeros)
    assert {k: list(v.shape) for k, v in exported.items()} == TORCHVISION_STATE_DICTS[reference]
    imported, kept = import_weights(model_name, exported, zeros)
    assert kept == [] and jax.tree.structure(imported) == jax.tree.structure(zeros)


@pytest.mark.parametrize("norm", ["batch", "frozen"])
def test_export_then_import_gives_the_variables_back(norm):
    model = detection.build(SMALL, num_classes=5, norm=norm)
    variables = random_variables(model)
    tensors = export_weights(SMALL, variables)
    assert "head.regression_head.conv.4.weight" in tensors  # conv_1_norm's scale
    assert tensors["head.regression_head.bbox_ctrness.weight"].shape == (1, 64, 3, 3)
    assert tensors["head.classification_head.conv.3.weight"].shape == (64, 64, 3, 3)
    np.testing.assert_array_equal(
        tensors["head.classification_head.conv.3.weight"],
        np.transpose(
            variables["params"]["head"]["classification_head"]["conv_1"]["kernel"], (3, 2, 0, 1)
        ),
    )
    assert any(k.endswith("num_batches_tracked") for k in tensors) == (norm == "batch")
    back, kept = import_weights(SMALL, tensors, random_variables(model, seed=1))
    assert kept == []
    jax.tree.map(np.testing.assert_array_equal, back, variables)


def test_new_class_count_keeps_fresh_class_outputs():
    tensors = export_weights(SMALL, random_variables(detection.build(SMALL, num_classes=5)))
    fresh = random_variables(detection.build(SMALL, num_classes=3), seed=2)
    variables, kept = import_weights(SMALL, tensors, fresh)
    head = "params/head/classification_head/cls_logits"
    assert kept == [f"{head}/bias", f"{head}/kernel"]
    out, new = flatten(variables), flatten(fresh)
    key = ("params", "head", "classification_head", "cls_logits", "kernel")
    np.testing.assert_array_equal(out[key], new[key])
    tower = ("params", "head", "classification_head", "conv_0_norm", "scale")
    np.testing.assert_array_equal(out[tower], tensors["head.classification_head.conv.1.weight"])


def test_classification_resnet_file_imports_the_body_only():
    model = detection.build(SMALL, num_classes=3)
    tensors = export_weights(SMALL, random_variables(model))
    prefix = "backbone.body."
    classifier = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    classifier["fc.weight"] = np.ones((10, 128), np.float32)
    fresh = random_variables(model, seed=3)
    variables, kept = import_weights(SMALL, classifier, fresh)
    assert kept and all(k.split("/")[1] != "backbone" for k in kept)
    exported = export_weights(SMALL, variables)
    for key, value in classifier.items():
        if not key.startswith("fc."):
            np.testing.assert_array_equal(exported[prefix + key], value, err_msg=key)


def test_files_for_other_heads_are_user_errors():
    model = detection.build(SMALL, num_classes=3)
    fresh = random_variables(model)
    tensors = export_weights(SMALL, fresh)
    relu = dict(tensors, **{"head.regression_head.conv.2.weight": np.zeros((64,), np.float32)})
    with pytest.raises(UserError, match="unexpected module head.regression_head.conv.2"):
        import_weights(SMALL, relu, fresh)
    retinanet_head = {k.replace("bbox_ctrness", "bbox_other"): v for k, v in tensors.items()}
    with pytest.raises(UserError, match="unexpected module head.regression_head.bbox_other"):
        import_weights(SMALL, retinanet_head, fresh)
