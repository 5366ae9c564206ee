"""FCOS's matching, loss and post-processing against torchvision's own FCOS.compute_loss /
FCOSHead.compute_loss / postprocess_detections on the same head outputs and points
(make_fcos_fixtures.fcos_case: stored seed 0, and fresh seeds where torch is installed)."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.tasks import fcos_loss
from tests.ops.helpers import assert_close, assert_same_detections, unflatten

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "fcos.npz")
FRESH_SEEDS = (1, 2)
LOSSES = {"cls_loss": "classification", "box_loss": "bbox_regression"}
LOSSES["ctrness_loss"] = "bbox_ctrness"


@pytest.fixture(params=["stored", "torchvision"])
def cases(request):
    """make_fcos_fixtures.fcos_case's cases; the "torchvision" variant skips without torch."""
    if request.param == "stored":
        with np.load(FIXTURE) as data:
            return [unflatten({k: data[k] for k in data.files})]
    pytest.importorskip("torch")
    pytest.importorskip("torchvision")
    from tests.ops.fixtures import make_fcos_fixtures, make_ops_fixtures

    return [
        unflatten(make_ops_fixtures.flatten(make_fcos_fixtures.fcos_case(seed)))
        for seed in FRESH_SEEDS
    ]


def _outputs(case, dtype):
    keys = ("cls_logits", "bbox_regression", "bbox_ctrness")
    return {k: np.asarray(case[k], dtype) for k in keys}


def _levels(case):
    return tuple(int(n) for n in case["num_anchors_per_level"])


def _loss(case, dtype, images=slice(None)):
    outputs = {k: v[images] for k, v in _outputs(case, dtype).items()}
    loss = jax.jit(functools.partial(fcos_loss.loss, anchors_per_level=_levels(case)))
    boxes = np.asarray(case["boxes"], dtype)[images]
    return loss(outputs, case["anchors"], boxes, case["classes"][images], case["mask"][images])


def _match(boxes, mask, anchors, levels):
    return fcos_loss.match_points(anchors, boxes, mask, levels, 1.5)


def test_matching_is_torchvisions(cases):
    for case in cases:
        levels = _levels(case)
        for dtype, key in ((np.float64, "loss64"), (np.float32, "loss32")):
            with jax.enable_x64(dtype == np.float64):
                anchors = jnp.asarray(case["anchors"], dtype)
                match = jax.jit(jax.vmap(functools.partial(_match, levels=levels), (0, 0, None)))
                ours = match(np.asarray(case["boxes"], dtype), case["mask"], anchors)
            # The real rows come first in every image: torchvision's indices are ours.
            np.testing.assert_array_equal(ours, case[key]["matched"], err_msg=key)
            assert (ours >= 0).sum() > 20  # many points are foreground


def test_loss_matches_torchvision_in_float64_and_float32(cases):
    for case in cases:
        with jax.enable_x64(True):
            total, parts = _loss(case, np.float64)
            assert total.dtype == jnp.float64
        for ours, theirs in LOSSES.items():
            assert_close(parts[ours], case["loss64"][theirs], 0, 1e-12, label=f"float64 {ours}")
        expected = sum(float(case["loss64"][k]) for k in LOSSES.values())
        np.testing.assert_allclose(total, expected, rtol=1e-12)
        total, parts = _loss(case, np.float32)
        assert total.dtype == jnp.float32
        for ours, theirs in LOSSES.items():
            assert_close(parts[ours], case["loss32"][theirs], 0, 2e-6, label=f"float32 {ours}")


def test_loss_divides_by_the_batchs_foreground_count(cases):
    # Images 1 (no boxes) and 3 alone: their sums over the foreground of these two only.
    for case in cases:
        with jax.enable_x64(True):
            _, parts = _loss(case, np.float64, [1, 3])
        for ours, theirs in LOSSES.items():
            assert_close(parts[ours], case["loss_rest"][theirs], 0, 1e-12, label=f"rest {ours}")


@pytest.mark.slow  # three option sets, three compiled post-processings: ~14 s on 2 cores
def test_postprocess_matches_torchvision(cases):
    for case in cases:
        for name, expected in case["postprocess"].items():
            options = fcos_loss.FCOSOptions(
                score_thresh=float(expected["score_thresh"]),
                topk_candidates=int(expected["topk_candidates"]),
                detections_per_img=int(expected["detections_per_img"]),
            )
            post = jax.jit(
                functools.partial(fcos_loss.postprocess, options=options), static_argnums=2
            )
            ours = post(
                _outputs(case, np.float32), case["anchors"], _levels(case), case["image_sizes"]
            )
            assert ours["classes"].dtype == jnp.int32
            assert ours["boxes"].shape == (4, options.detections_per_img, 4)
            for image in range(4):
                assert_same_detections(ours, expected, image, label=f"fcos {name}")


def test_loss_gradients_are_finite_and_padding_is_ignored():
    with np.load(FIXTURE) as data:
        case = unflatten({k: data[k] for k in data.files})
    outputs = _outputs(case, np.float32)
    levels = _levels(case)

    def total(outputs, boxes):
        return fcos_loss.loss(
            outputs, case["anchors"], boxes, case["classes"], case["mask"], anchors_per_level=levels
        )[0]

    value_and_grad = jax.jit(jax.value_and_grad(total))
    value, grads = value_and_grad(outputs, case["boxes"])
    for key, grad in grads.items():
        assert np.isfinite(grad).all(), key
        assert np.abs(grad).max() > 0, key
    junk = np.where(case["mask"][..., None], case["boxes"], np.float32(7.0))
    np.testing.assert_allclose(value_and_grad(outputs, junk)[0], value, rtol=1e-6)


def test_bad_options_and_levels_are_errors():
    with pytest.raises(UserError, match="center_sampling_radius"):
        fcos_loss.FCOSOptions(center_sampling_radius=0)
    with pytest.raises(UserError, match="detections_per_img"):
        fcos_loss.FCOSOptions(detections_per_img=0)
    anchors = np.zeros((6, 4), np.float32)
    outputs = {"cls_logits": np.zeros((1, 6, 3), np.float32)}
    with pytest.raises(ValueError, match="needs anchors_per_level"):
        fcos_loss.loss(outputs, anchors, anchors[None], np.zeros((1, 6), np.int32), np.ones((1, 6)))
    with pytest.raises(ValueError, match="sums to 5"):
        fcos_loss.postprocess(outputs, anchors, (4, 1), np.ones((1, 2)))
