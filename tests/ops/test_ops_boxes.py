"""Box arithmetic, box coding and anchors against torchvision (tests/ops/conftest.py: stored
fixtures, and fresh torchvision cases where torch is installed)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops import anchors as anchor_ops
from jaxvision.ops.boxes import (
    BoxCoder,
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    generalized_box_iou,
    remove_small_boxes_mask,
)
from tests.ops.helpers import assert_close


def test_box_iou_area_and_giou(cases):
    for case in cases("boxes"):
        b1, b2 = case["boxes1"], case["boxes2"]
        assert_close(jax.jit(box_area)(b1), case["area"], 0, label="box_area")
        iou = np.asarray(jax.jit(box_iou)(b1, b2))
        giou = np.asarray(jax.jit(generalized_box_iou)(b1, b2))
        nan = np.isnan(case["iou"])
        assert nan.any(), "the case has pairs of zero union"
        # Where torchvision divides 0 by 0 (union 0) the IoU is 0 and the GIoU is finite: -1
        # for apart boxes, 0 for the same point; elsewhere the same numbers.
        assert np.all(iou[nan] == 0)
        assert np.all(np.isin(giou[nan], [-1.0, 0.0]))
        np.testing.assert_array_equal(np.isnan(case["giou"]), nan)
        assert_close(iou[~nan], case["iou"][~nan], 1e-6, label="box_iou")
        assert_close(giou[~nan], case["giou"][~nan], 1e-6, label="generalized_box_iou")


def test_box_convert(cases):
    for case in cases("boxes"):
        for key, expected in case["convert"].items():
            fmt_in, fmt_out = key.split("_")
            source = case["boxes1"] if fmt_in == "xyxy" else case["other"]
            assert_close(box_convert(source, fmt_in, fmt_out), expected, 1e-5, label=key)


def test_clip_and_small_boxes(cases):
    for case in cases("boxes"):
        clipped = jax.jit(clip_boxes)(case["spill"], case["sizes"])
        assert_close(clipped, case["clipped"], 0, label="clip")
        flat = case["boxes1"].reshape(-1, 4)
        for min_size, kept in case["small_kept"].items():
            np.testing.assert_array_equal(remove_small_boxes_mask(flat, float(min_size)), kept)


def test_box_coder(cases):
    for case in cases("box_coder"):
        for name in ("unit", "ssd"):
            coder = BoxCoder(tuple(float(w) for w in case[name]["weights"]))
            encoded = jax.jit(coder.encode)(case["gt"], case["anchors"])
            assert_close(encoded, case[name]["encoded"], 2e-6, 1e-5, label=f"encode {name}")
            decoded = jax.jit(coder.decode)(case["codes"], case["anchors"])
            # Codes past the clamp give boxes of ~1e5 px: compare relative there.
            assert np.isfinite(decoded).all()
            assert_close(decoded, case[name]["decoded"], 1e-4, 1e-6, label=f"decode {name}")


def test_anchors(cases):
    for case in cases("anchors"):
        for grid in case["grids"]:
            ours = anchor_ops.anchor_grid(
                tuple(grid["image_size"]),
                [tuple(s) for s in grid["feature_shapes"]],
                [tuple(s) for s in grid["sizes"]],
                [tuple(r) for r in grid["ratios"]],
            )
            assert ours.dtype == np.float32
            np.testing.assert_array_equal(ours, grid["anchors"])
            counts = anchor_ops.anchors_per_level(
                [tuple(s) for s in grid["feature_shapes"]], grid["sizes"], grid["ratios"]
            )
            assert sum(counts) == len(ours)
        np.testing.assert_array_equal(anchor_ops.retinanet_anchor_sizes(), case["retinanet_sizes"])
        ssd300 = anchor_ops.default_boxes(
            (300, 300),
            anchor_ops.SSD300_FEATURE_SHAPES,
            anchor_ops.SSD300_ASPECT_RATIOS,
            scales=anchor_ops.SSD300_SCALES,
            steps=anchor_ops.SSD300_STEPS,
        )
        assert ssd300.shape == (8732, 4) and ssd300.dtype == np.float32
        np.testing.assert_array_equal(ssd300, case["ssd300"])
        plain = anchor_ops.default_boxes(
            (120, 90), [(8, 6), (4, 3), (1, 1)], [[2], [2, 3], [3]], clip=False
        )
        np.testing.assert_array_equal(plain, case["plain"])


def test_box_iou_shapes_and_empty_sets():
    boxes = jnp.array([[0.0, 0.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0]])
    iou = jax.jit(box_iou)(boxes, boxes)
    np.testing.assert_allclose(iou, [[1.0, 25 / 175], [25 / 175, 1.0]], rtol=1e-6)

    def shape(a, b):
        return jax.eval_shape(box_iou, jnp.zeros(a), jnp.zeros(b)).shape

    assert shape((0, 4), (2, 4)) == (0, 2)
    assert shape((3, 0, 4), (3, 5, 4)) == (3, 0, 5)
    # Leading axes broadcast: per-image ground truth against shared anchors.
    assert shape((2, 3, 4), (2, 4)) == (2, 3, 2)
    # Gradients stay finite at union 0.
    grad = jax.jit(jax.grad(lambda b: box_iou(b, b).sum()))(jnp.zeros((2, 4)))
    assert np.isfinite(grad).all()


def test_clip_boxes_to_one_size():
    boxes = jnp.array([[[-3.0, 2.0, 40.0, 70.0]]])
    clipped = jax.jit(clip_boxes, static_argnums=1)(boxes, (50, 30))
    np.testing.assert_array_equal(clipped, [[[0.0, 2.0, 30.0, 50.0]]])


def test_box_convert_rejects_unknown_formats():
    with pytest.raises(ValueError, match="xyxy"):
        box_convert(jnp.zeros((1, 4)), "xyxy", "yxyx")


def test_box_coder_round_trip():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    anchors = jnp.array([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 4.0, 8.0]])
    gt = jnp.array([[12.0, 18.0, 60.0, 45.0], [1.0, 1.0, 3.0, 3.0]])
    round_trip = jax.jit(lambda g, a: coder.decode(coder.encode(g, a), a))(gt, anchors)
    np.testing.assert_allclose(round_trip, gt, atol=1e-5)


def test_giou_of_inverted_boxes_is_finite():
    # Zero enclosing area, non-zero union: torchvision divides by 0 (-inf, inf); here the
    # penalty is 0 and the GIoU the IoU alone, as generalized_box_iou's docstring says.
    boxes = jnp.array([[2.0, 0.0, 0.0, 2.0], [2.0, 2.0, 0.0, 0.0]])
    giou = np.diagonal(np.asarray(jax.jit(generalized_box_iou)(boxes, boxes)))
    assert giou.tolist() == [0.0, 0.0] and np.signbit(giou).tolist() == [True, False]
