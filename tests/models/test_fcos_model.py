"""FCOS: torchvision's parameter counts and head layout, its point configuration, the registry,
and the Detection task's anchors for it.

Counts from torchvision 0.28 (`sum(p.numel() for p in fcos_resnet50_fpn(...).parameters())`,
FCOS_ResNet50_FPN_Weights.COCO_V1's num_params for the frozen one);
tests/weights/test_parity_fcos.py checks outputs against torch.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.models.detection.fcos import FCOS
from jaxvision.models.resnet import BasicBlock
from jaxvision.tasks.detection import family_options, model_anchors

TORCHVISION_PARAMS = {"frozen": 32_269_600, "batch": 32_322_720}


def count(tree) -> int:
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


@functools.cache
def abstract(name, norm=None, height=320, width=416):
    """(model, abstract variables, abstract outputs on [2, H, W, 3]): nothing is allocated."""
    model = detection.build(name, num_classes=91, **({"norm": norm} if norm else {}))
    x = jax.ShapeDtypeStruct((2, height, width, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    return model, variables, jax.eval_shape(model.apply, variables, x)


@pytest.mark.parametrize("norm", sorted(TORCHVISION_PARAMS))
def test_param_counts_equal_torchvision(norm):
    _, variables, _ = abstract("fcos_resnet50_fpn", norm)
    assert count(variables["params"]) == TORCHVISION_PARAMS[norm]
    head = variables["params"]["head"]
    assert sorted(head["regression_head"]) == sorted(
        ["bbox_ctrness", "bbox_reg"] + [f"conv_{i}{s}" for i in range(4) for s in ("", "_norm")]
    )
    assert head["classification_head"]["cls_logits"]["kernel"].shape == (3, 3, 256, 91)
    # FCOS's tower convs keep their biases before the GroupNorm (unlike RetinaNet's v2 head).
    assert head["classification_head"]["conv_3"]["bias"].shape == (256,)


@pytest.mark.parametrize(
    ("name", "norm", "side", "shapes"),
    [
        # torchvision: 320x416 → P3..P7 as ceil(side / stride).
        ("fcos_resnet50_fpn", "frozen", (320, 416), ((40, 52), (20, 26), (10, 13), (5, 7), (3, 4))),
        ("fcos_resnet18_fpn_small", None, (128, 128), ((16, 16), (8, 8), (4, 4))),
    ],
)
def test_output_shapes(name, norm, side, shapes):
    model, _, outputs = abstract(name, norm, *side)
    assert detection.feature_shapes(model, *side) == shapes
    num = sum(h * w for h, w in shapes)
    assert num == {"fcos_resnet50_fpn": 2_777, "fcos_resnet18_fpn_small": 336}[name]
    assert {k: (v.shape, v.dtype) for k, v in outputs.items()} == {
        "cls_logits": ((2, num, 91), jnp.float32),
        "bbox_regression": ((2, num, 4), jnp.float32),
        "bbox_ctrness": ((2, num, 1), jnp.float32),
    }


def test_point_configuration_is_torchvisions():
    model = detection.build("fcos_resnet50_fpn", num_classes=91)
    assert model.anchor_sizes() == ((8,), (16,), (32,), (64,), (128,))
    assert model.anchor_aspect_ratios() == ((1.0,),) * 5
    assert (model.num_anchors(), model.levels(), model.family) == (1, (3, 4, 5, 6, 7), "fcos")
    small = detection.build("fcos_resnet18_fpn_small", num_classes=4)
    assert small.anchor_sizes() == ((8,), (16,), (32,))
    # The task places one 8 x 8 box per stride-8 position at P3, its corner at the position
    # minus 4 (torchvision's AnchorGenerator: the point is (j * 8, i * 8)).
    anchors, per_level = model_anchors(small, 128)
    assert per_level == (256, 64, 16) and anchors.shape == (336, 4)
    np.testing.assert_array_equal(anchors[:2], [[-4, -4, 4, 4], [4, -4, 12, 4]])
    np.testing.assert_array_equal(anchors[256], [-8, -8, 8, 8])
    assert family_options("fcos", score_thresh=0.3).score_thresh == 0.3
    assert family_options("fcos").center_sampling_radius == 1.5


def tiny_fcos(**kwargs):
    options = dict(width=8, fpn_channels=32, head_convs=1, norm="batch", max_level=6)
    return FCOS((1, 1, 1, 1), BasicBlock, num_classes=3, **{**options, **kwargs})


@pytest.mark.slow
def test_head_layout_and_init_are_torchvisions():
    model = tiny_fcos()
    x = np.random.default_rng(1).normal(size=(1, 64, 96, 3)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    head = variables["params"]["head"]
    prior = -np.log(0.99 / 0.01)
    np.testing.assert_allclose(head["classification_head"]["cls_logits"]["bias"], prior)
    for branch in ("classification_head", "regression_head"):
        assert 0.005 < float(jnp.std(head[branch]["conv_0"]["kernel"])) < 0.015
        assert not np.any(head[branch]["conv_0"]["bias"])
    capture = ("cls_logits", "bbox_reg", "bbox_ctrness")
    out, state = jax.jit(
        lambda v, x: model.apply(
            v,
            x,
            capture_intermediates=lambda m, _: (m.name or "") in capture,
            mutable=["intermediates"],
        )
    )(variables, x)
    heads = state["intermediates"]["head"]
    for key, branch, conv, columns in [
        ("cls_logits", "classification_head", "cls_logits", 3),
        ("bbox_regression", "regression_head", "bbox_reg", 4),
        ("bbox_ctrness", "regression_head", "bbox_ctrness", 1),
    ]:
        maps = heads[branch][conv]["__call__"]
        assert len(maps) == 4  # P3..P6, one call per level
        # One point per position: row-major positions, level by level (torchvision's order).
        expected = np.concatenate([np.asarray(m).reshape(1, -1, columns) for m in maps], axis=1)
        if key == "bbox_regression":
            expected = np.maximum(expected, 0)  # torchvision's ReLU on the distances
        np.testing.assert_array_equal(np.asarray(out[key]), expected)
    assert out["cls_logits"].shape[1] == 8 * 12 + 4 * 6 + 2 * 3 + 1 * 2


def test_registry_and_bad_options():
    assert {"fcos_resnet50_fpn", "fcos_resnet18_fpn_small"} <= set(detection.names())
    assert detection.family("fcos_resnet18_fpn_small") == "fcos"
    assert detection.class_outputs("fcos_resnet50_fpn") == ("head/classification_head/cls_logits",)
    assert "stage_sizes" not in detection.options("fcos_resnet50_fpn")
    assert {"anchor_size", "head_convs", "max_level"} <= set(detection.options("fcos_resnet50_fpn"))
    small = detection.build("fcos_resnet18_fpn_small", num_classes=4, width=8)
    assert (small.width, small.fpn_channels, small.norm, small.head_convs) == (8, 64, "batch", 2)
    with pytest.raises(UserError, match="unknown norm 'group'"):
        detection.build("fcos_resnet50_fpn", num_classes=3, norm="group")
    with pytest.raises(UserError, match="max_level 4"):
        detection.build("fcos_resnet50_fpn", num_classes=3, max_level=4)
    with pytest.raises(UserError, match="has no option 'min_level'"):
        detection.build("fcos_resnet50_fpn", num_classes=3, min_level=2)
    with pytest.raises(UserError, match="prior_probability"):
        detection.build("fcos_resnet50_fpn", num_classes=3, prior_probability=0)
    with pytest.raises(UserError, match="num_classes counts the background"):
        detection.build("fcos_resnet50_fpn", num_classes=1)
    with pytest.raises(UserError, match="fcos has no option 'fg_iou_tresh'"):
        family_options("fcos", fg_iou_tresh=0.5)


def test_frozen_backbone_is_retinanets():
    # torchvision's trainable_backbone_layers on the same ResNet body (default 3).
    model, variables, _ = abstract("fcos_resnet50_fpn", "frozen")
    leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    paths = ["/".join(p.key for p in path) for path, _ in leaves]
    frozen = detection.frozen_backbone(model)
    trainable = sum(
        int(np.prod(v.shape)) for p, (_, v) in zip(paths, leaves, strict=True) if not frozen(p)
    )
    # torchvision fcos_resnet50_fpn(weights_backbone=...): requires_grad parameters.
    assert trainable == 32_269_600 - 9_408 - 212_992  # conv1 and layer1 frozen
