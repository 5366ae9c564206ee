"""torchvision detection converter on stored fixtures (no torch needed): head outputs, names,
round trips, classification backbones, new heads.

The fixtures come from tests/weights/fixtures/make_detection_fixtures.py (torchvision's own
classes, shrunk); tests/weights/test_parity_detection.py checks the full-size models.
"""

import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision import weights
from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.models.detection.retinanet import RetinaNet
from jaxvision.models.detection.ssd import SSD
from jaxvision.models.resnet import BasicBlock, Bottleneck
from jaxvision.weights import export_weights, import_weights, load_safetensors, load_weights

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def retinanet_frozen(num_classes=5, fpn_channels=16):
    return RetinaNet(
        (2, 1, 1, 1),
        BasicBlock,
        num_classes=num_classes,
        width=8,
        norm="frozen",
        bn_eps=0.0,
        fpn_channels=fpn_channels,
    )


def retinanet_batch(num_classes=5, norm="batch"):
    return RetinaNet(
        (1, 1, 1, 1),
        Bottleneck,
        num_classes=num_classes,
        width=4,
        norm=norm,
        min_level=2,
        fpn_channels=16,
        p6_input="c5",
        head_convs=2,
        anchor_size=16,
        scales_per_octave=2,
    )


def ssd_small(num_classes=5):
    return SSD(
        num_classes=num_classes,
        width=4,
        fc_channels=64,
        extra_blocks=((8, 16, 2, 1), (8, 16, 1, 0)),
        aspect_ratios=((2,), (2, 3), (2, 3), (2,)),
        scales=(0.1, 0.2, 0.4, 0.6, 0.8),
        steps=(8, 16, 32, 64),
        image_size=128,
    )


# fixture -> (converter name, our model in the fixture's configuration).
SMALL = {
    "retinanet_frozen": ("retinanet_resnet18_fpn", retinanet_frozen),
    "retinanet_batch": ("retinanet_resnet50_fpn", retinanet_batch),
    "ssd_small": ("ssd300_vgg16", ssd_small),
}


def fixture(name):
    tensors = load_safetensors(os.path.join(FIXTURES, f"{name}.safetensors"))
    with np.load(os.path.join(FIXTURES, f"{name}_expected.npz")) as data:
        return tensors, dict(data)


def fresh_variables(model, shape, seed=0):
    """Variables shaped like model.init's, filled from numpy (no compile)."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape, jnp.float32))
    return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), abstract)


def flat(variables):
    return {"/".join(k): v for k, v in weights.common.flatten(variables).items()}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "norm"),
    [("retinanet_frozen", None), ("retinanet_batch", "batch"), ("retinanet_batch", "frozen")]
    + [("ssd_small", None)],
)
def test_small_torchvision_detectors_give_torch_head_outputs(name, norm):
    # retinanet_batch is torch BatchNorm2d: in eval mode a frozen-BN model reads it alike.
    model_name, make = SMALL[name]
    model = make(norm=norm) if norm else make()
    _, expected = fixture(name)
    images = expected["images"]
    path = os.path.join(FIXTURES, f"{name}.safetensors")
    variables, kept = load_weights(path, model_name, fresh_variables(model, images.shape))
    assert kept == []
    outputs = jax.jit(model.apply)(variables, images)
    for key in ("cls_logits", "bbox_regression"):
        assert outputs[key].shape == expected[key].shape
        scale = np.abs(expected[key]).max()
        np.testing.assert_allclose(outputs[key], expected[key], rtol=0, atol=1e-5 * max(1, scale))
    shapes = detection.feature_shapes(model, *images.shape[1:3])
    anchors = model.num_anchors()
    anchors = (anchors,) * len(shapes) if isinstance(anchors, int) else anchors
    assert expected["cls_logits"].shape[1] == sum(
        h * w * a for (h, w), a in zip(shapes, anchors, strict=True)
    )


@pytest.mark.parametrize("name", sorted(SMALL))
def test_export_inverts_import(name):
    model_name, make = SMALL[name]
    tensors, expected = fixture(name)
    variables, _ = import_weights(
        model_name, tensors, fresh_variables(make(), expected["images"].shape)
    )
    exported = export_weights(model_name, variables)
    assert sorted(exported) == sorted(tensors)  # frozen BN: no num_batches_tracked, as torch's
    for key, value in tensors.items():
        assert exported[key].dtype == value.dtype
        np.testing.assert_array_equal(exported[key], value, err_msg=key)


with open(os.path.join(FIXTURES, "torchvision_detection_state_dicts.json")) as f:
    TORCHVISION_STATE_DICTS = json.load(f)


@pytest.mark.parametrize("reference", sorted(TORCHVISION_STATE_DICTS))
def test_full_size_export_names_and_shapes_are_torchvisions(reference):
    model_name, *norm = reference.split()
    model = detection.build(model_name, num_classes=91, **({"norm": norm[0]} if norm else {}))
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
    exported = export_weights(model_name, zeros)
    assert {k: list(v.shape) for k, v in exported.items()} == TORCHVISION_STATE_DICTS[reference]
    imported, kept = import_weights(model_name, exported, zeros)
    assert kept == [] and jax.tree.structure(imported) == jax.tree.structure(zeros)


def test_importable():
    assert set(detection.names()) <= set(weights.importable_models())


def test_new_class_count_keeps_fresh_class_outputs():
    tensors, expected = fixture("retinanet_frozen")
    fresh = fresh_variables(retinanet_frozen(num_classes=7), expected["images"].shape)
    variables, kept = import_weights("retinanet_resnet18_fpn", tensors, fresh)
    head = "params/head/classification_head/cls_logits"
    assert kept == [f"{head}/bias", f"{head}/kernel"]
    out, new = flat(variables), flat(fresh)
    np.testing.assert_array_equal(out[f"{head}/kernel"], new[f"{head}/kernel"])
    # The class-agnostic tower is imported.
    tower = "params/head/classification_head/conv_3/kernel"
    np.testing.assert_array_equal(
        out[tower],
        np.transpose(tensors["head.classification_head.conv.3.0.weight"], (2, 3, 1, 0)),
    )
    # Same class count, but new_head asks for a fresh classifier anyway.
    same = fresh_variables(retinanet_frozen(), expected["images"].shape)
    _, kept = import_weights("retinanet_resnet18_fpn", tensors, same, new_head=True)
    assert kept == [f"{head}/bias", f"{head}/kernel"]

    tensors, expected = fixture("ssd_small")
    fresh = fresh_variables(ssd_small(num_classes=3), expected["images"].shape)
    _, kept = import_weights("ssd300_vgg16", tensors, fresh)
    assert kept == [
        f"params/head/classification_head/module_list_{i}/{leaf}"
        for i in range(4)
        for leaf in ("bias", "kernel")
    ]


def test_classification_resnet_file_imports_the_body_only():
    tensors, expected = fixture("retinanet_frozen")
    prefix = "backbone.body."
    classifier = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    classifier["fc.weight"] = np.ones((10, 64), np.float32)
    classifier["fc.bias"] = np.ones((10,), np.float32)
    fresh = fresh_variables(retinanet_frozen(num_classes=3), expected["images"].shape)
    variables, kept = import_weights("retinanet_resnet18_fpn", classifier, fresh)
    new, out = flat(fresh), flat(variables)
    assert kept == sorted(k for k in new if k.split("/")[1] != "backbone")
    assert len(kept) == 2 * (3 + 3 + 2 + 5 * 2)  # FPN inner, layer, p6/p7; 2 towers of 4 + out
    for key in kept:
        np.testing.assert_array_equal(out[key], new[key])
    exported = export_weights("retinanet_resnet18_fpn", variables)
    for key, value in classifier.items():
        if not key.startswith("fc."):
            np.testing.assert_array_equal(exported[prefix + key], value, err_msg=key)


def test_classification_vgg_file_imports_vgg_layers_only():
    tensors, expected = fixture("ssd_small")
    classifier = {}
    for key, value in tensors.items():
        if m := re.fullmatch(r"backbone\.features\.(\d+)\.(\w+)", key):
            classifier[f"features.{m[1]}.{m[2]}"] = value
        elif m := re.fullmatch(r"backbone\.extra\.0\.([135])\.(\w+)", key):  # conv5_x
            classifier[f"features.{23 + int(m[1])}.{m[2]}"] = value
    classifier["classifier.6.weight"] = np.ones((10, 16), np.float32)
    fresh = fresh_variables(ssd_small(), expected["images"].shape)
    variables, kept = import_weights("ssd300_vgg16", classifier, fresh)
    modules = sorted({k.split("/")[2] for k in kept})
    # torchvision creates these fresh too: the conv4_3 scale, fc6/fc7, the extras, the heads.
    assert modules == ["classification_head", "extra_0_7_1", "extra_0_7_3"] + [
        "extra_1_0",
        "extra_1_2",
        "extra_2_0",
        "extra_2_2",
        "regression_head",
        "scale_weight",
    ]
    exported = export_weights("ssd300_vgg16", variables)
    np.testing.assert_array_equal(
        exported["backbone.extra.0.5.weight"], classifier["features.28.weight"]
    )
    np.testing.assert_array_equal(
        exported["backbone.features.21.bias"], classifier["features.21.bias"]
    )


def test_pre_0_8_retinanet_names_are_read():
    # torch.load of torchvision's original COCO RetinaNet file gives the v1 names.
    tensors, expected = fixture("retinanet_frozen")
    legacy = {}
    for key, value in tensors.items():
        key = re.sub(r"(head\.\w+\.conv)\.(\d)\.0\.", lambda m: f"{m[1]}.{2 * int(m[2])}.", key)
        legacy[re.sub(r"(fpn\.(inner|layer)_blocks\.\d)\.0\.", r"\1.", key)] = value
    assert "head.classification_head.conv.6.weight" in legacy
    assert "backbone.fpn.inner_blocks.2.weight" in legacy
    fresh = fresh_variables(retinanet_frozen(), expected["images"].shape)
    new, _ = import_weights("retinanet_resnet18_fpn", legacy, fresh)
    current, _ = import_weights("retinanet_resnet18_fpn", tensors, fresh)
    jax.tree.map(np.testing.assert_array_equal, new, current)


def test_files_for_other_architectures_are_user_errors():
    tensors, expected = fixture("retinanet_frozen")
    ssd_fresh = fresh_variables(ssd_small(), fixture("ssd_small")[1]["images"].shape)
    with pytest.raises(UserError, match="unexpected module backbone.body.conv1|does not fit"):
        import_weights("ssd300_vgg16", tensors, ssd_fresh)
    with pytest.raises(UserError, match="unexpected tensor features.30.weight"):
        import_weights("ssd300_vgg16", {"features.30.weight": np.zeros((1,))}, ssd_fresh)
    wider = fresh_variables(retinanet_frozen(fpn_channels=8), expected["images"].shape)
    with pytest.raises(UserError, match="has shape"):
        import_weights("retinanet_resnet18_fpn", tensors, wider)
    with pytest.raises(UserError, match="unexpected module"):
        import_weights("retinanet_resnet18_fpn", {"head.other.weight": np.zeros(1)}, wider)


def test_group_norm_head_has_torchvisions_v2_names_and_round_trips():
    """head_norm="group": each tower conv loses its bias and its GroupNorm is torch's
    `conv.i.1` (retinanet_resnet50_fpn_v2's head); export then import gives the variables back.
    Parity with torchvision's v2 head: tests/weights/test_parity_detection.py."""
    model = retinanet_batch(norm="batch").clone(head_norm="group", head_convs=2)
    # init's structure filled by numpy: names and a round trip need no compiled init.
    abstract = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    rng = np.random.default_rng(0)
    variables = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), abstract)
    tensors = export_weights("retinanet_resnet18_fpn", variables)
    tower = sorted(k for k in tensors if ".conv." in k and "classification_head" in k)
    assert tower == [
        f"head.classification_head.conv.{i}.{j}"
        for i in range(2)
        for j in ("0.weight", "1.bias", "1.weight")
    ]
    back, kept = import_weights("retinanet_resnet18_fpn", tensors, variables)
    assert kept == []
    jax.tree.map(np.testing.assert_array_equal, back, variables)
