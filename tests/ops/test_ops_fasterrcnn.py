"""Faster R-CNN's proposal filtering, training targets, losses and post-processing against
torchvision's RegionProposalNetwork / RoIHeads (make_fasterrcnn_fixtures), and the sampler's
caps and uniformity."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.models.detection.fasterrcnn import propose
from jaxvision.ops import balanced_sample, compact
from jaxvision.tasks import fasterrcnn_loss
from tests.ops.helpers import assert_close, assert_same_detections

# Sample more than there is, as the fixture does: the losses are then determined.
ALL = dataclasses.replace(
    fasterrcnn_loss.FasterRCNNOptions(),
    rpn_batch_size_per_image=4096,
    box_batch_size_per_image=1024,
)


def test_proposals_match_torchvision(cases):
    for case in cases("fasterrcnn"):
        levels = tuple(int(n) for n in case["num_anchors_per_level"])
        run = jax.jit(
            lambda o, d, s, levels=levels, anchors=case["anchors"]: propose(
                o, d, anchors, levels, s, pre_nms_top_n=40, post_nms_top_n=50
            )
        )
        boxes, scores, valid = run(case["objectness"], case["deltas"], case["image_sizes"])
        expected = case["proposals"]
        np.testing.assert_array_equal(np.sum(valid, axis=1), expected["count"])
        for image, count in enumerate(expected["count"]):
            assert valid[image, :count].all()
            assert_close(boxes[image, :count], expected["boxes"][image, :count], 1e-4, 0, "boxes")
            assert_close(scores[image, :count], expected["scores"][image, :count], 1e-6, 0, "p")


def test_rpn_loss_matches_torchvision(cases):
    for case in cases("fasterrcnn"):
        loss = jax.jit(functools.partial(fasterrcnn_loss.rpn_loss, options=ALL))
        objectness, box = loss(
            case["objectness"],
            case["deltas"],
            case["anchors"],
            case["boxes"],
            case["mask"],
            jax.random.key(0),
        )
        expected = case["rpn_loss"]
        assert_close(objectness, expected["objectness"], 0, 1e-5, label="rpn objectness")
        assert_close(box, expected["box"], 0, 1e-5, label="rpn box")


def test_roi_sampling_matches_torchvision(cases):
    for case in cases("fasterrcnn"):
        roi = case["roi"]
        sample = jax.jit(functools.partial(fasterrcnn_loss.sample_rois, options=ALL))
        rois, rois_valid, targets = sample(
            roi["proposals"],
            roi["proposals_valid"],
            case["boxes"],
            case["classes"],
            case["mask"],
            key=jax.random.key(0),
        )
        assert rois.shape == (3, 1024, 4)
        np.testing.assert_array_equal(np.sum(rois_valid, axis=1), roi["count"])
        width = roi["rois"].shape[1]
        valid = np.asarray(rois_valid[:, :width])
        assert_close(np.where(valid[..., None], rois[:, :width], 0), roi["rois"], 1e-6, 0, "rois")
        labels = np.where(valid, targets["roi_labels"][:, :width], 0)
        np.testing.assert_array_equal(labels, roi["labels"])
        positive = (roi["labels"] > 0)[..., None]
        ours = np.where(positive, targets["roi_targets"][:, :width], 0)
        assert_close(ours, np.where(positive, roi["targets"], 0), 1e-4, 0, "roi targets")


@pytest.mark.slow
def test_box_loss_and_postprocess_match_torchvision(cases):
    for case in cases("fasterrcnn"):
        roi = case["roi"]
        width = roi["rois"].shape[1]
        rois_valid = np.arange(width)[None, :] < roi["count"][:, None]
        cls_loss, box_loss = jax.jit(fasterrcnn_loss.box_loss)(
            roi["class_logits"], roi["box_regression"], roi["labels"], roi["targets"], rois_valid
        )
        assert_close(cls_loss, roi["cls_loss"], 0, 1e-5, label="roi cls_loss")
        assert_close(box_loss, roi["box_loss"], 0, 1e-5, label="roi box_loss")
        outputs = {
            "class_logits": roi["post_logits"],
            "box_regression": roi["post_regression"],
            "rois": roi["rois"],
            "rois_valid": rois_valid,
        }
        for name, expected in roi["detections"].items():
            options = fasterrcnn_loss.FasterRCNNOptions(
                detections_per_img=int(expected["detections_per_img"])
            )
            post = jax.jit(functools.partial(fasterrcnn_loss.postprocess, options=options))
            ours = post(outputs, case["image_sizes"])
            assert ours["classes"].dtype == jnp.int32
            for image in range(3):
                assert_same_detections(ours, expected, image, label=f"fasterrcnn {name}")


@pytest.mark.slow
def test_balanced_sample_caps_and_uniformity():
    # Jitted: run eagerly, each of the sampler's ops would compile on its own.
    sample = jax.jit(balanced_sample, static_argnums=(3, 4))
    positive = np.arange(1000) < 300
    negative = ~positive
    pos, neg = sample(jax.random.key(0), positive, negative, 256, 0.5)
    assert int(pos.sum()) == 128 and int(neg.sum()) == 128
    assert not (pos & negative).any() and not (neg & positive).any()
    # Few positives: negatives fill the rest; few of both: everything.
    pos, neg = sample(jax.random.key(1), np.arange(1000) < 10, np.arange(1000) >= 10, 256, 0.5)
    assert int(pos.sum()) == 10 and int(neg.sum()) == 246
    pos, neg = sample(jax.random.key(2), np.arange(40) < 5, np.arange(40) >= 30, 256, 0.5)
    assert int(pos.sum()) == 5 and int(neg.sum()) == 10
    # Uniform: over 400 draws each of 300 positives is picked ~128/300 of the time.
    keys = jax.random.split(jax.random.key(3), 400)
    picks = jax.jit(jax.vmap(lambda k: balanced_sample(k, positive, negative, 256, 0.5)[0]))(keys)
    rate = np.asarray(picks[:, :300].mean(axis=0))
    np.testing.assert_allclose(rate.mean(), 128 / 300, atol=1e-6)
    assert rate.min() > 0.3 and rate.max() < 0.56  # binomial(400, 0.43): +-0.025 sd


def test_compact_keeps_index_order():
    mask = jnp.array([False, True, False, True, True, False])
    indices, valid = compact(mask, 5)
    np.testing.assert_array_equal(indices, [1, 3, 4, 0, 0])
    np.testing.assert_array_equal(valid, [True, True, True, False, False])
