"""Matcher and SSDMatcher against torchvision: ties, values on the thresholds, padded and
missing ground truth."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.ops.matching import match_anchors, match_anchors_ssd

MATCHERS = {
    "retinanet": jax.jit(lambda iou, valid: match_anchors(iou, valid, 0.5, 0.4, True)),
    "strict": jax.jit(lambda iou, valid: match_anchors(iou, valid, 0.5, 0.4, False)),
    "wide": jax.jit(lambda iou, valid: match_anchors(iou, valid, 0.7, 0.3, True)),
    "ssd": jax.jit(lambda iou, valid: match_anchors_ssd(iou, valid, 0.5)),
}


def test_matchers_match_torchvision(cases):
    for case in cases("matcher"):
        for sub in case["cases"]:
            ours = MATCHERS[str(sub["kind"])](sub["iou"], sub["valid"])
            assert ours.dtype == jnp.int32
            np.testing.assert_array_equal(ours, sub["matches"], err_msg=str(sub["label"]))


def test_low_quality_matches_take_every_tie():
    iou = jnp.array([[0.3, 0.3, 0.1, 0.2], [0.0, 0.2, 0.6, 0.45]])
    valid = jnp.array([True, True])
    # Anchors 0 and 1 tie for gt 0's best (0.3): both get their own best gt, 0.
    np.testing.assert_array_equal(MATCHERS["retinanet"](iou, valid), [0, 0, 1, -2])
    np.testing.assert_array_equal(MATCHERS["strict"](iou, valid), [-1, -1, 1, -2])
    # A padding row never matches, and never pulls anchors in as a low-quality match.
    padded = jnp.concatenate([iou, jnp.array([[0.9, 0.0, 0.0, 0.0]])])
    np.testing.assert_array_equal(
        MATCHERS["retinanet"](padded, jnp.array([True, True, False])), [0, 0, 1, -2]
    )


def test_no_valid_ground_truth_is_all_background():
    iou = jnp.full((3, 5), 0.8)
    for fn in MATCHERS.values():
        np.testing.assert_array_equal(fn(iou, jnp.zeros(3, bool)), [-1] * 5)
    assert match_anchors(jnp.zeros((0, 5)), jnp.zeros(0, bool), 0.5, 0.4, True).shape == (5,)


def test_ssd_forces_each_ground_truths_best_anchor():
    iou = jnp.array([[0.1, 0.2, 0.0], [0.0, 0.3, 0.1], [0.05, 0.0, 0.4]])
    # gt 0 and 1 share best anchor 1: the higher index wins (torch's last write).
    np.testing.assert_array_equal(MATCHERS["ssd"](iou, jnp.array([True] * 3)), [-1, 1, 2])
    np.testing.assert_array_equal(MATCHERS["ssd"](iou, jnp.array([True, False, True])), [-1, 0, 2])


def test_matchers_batch_over_images():
    rng = np.random.default_rng(0)
    iou = rng.random((3, 4, 20)).astype(np.float32)
    valid = rng.random((3, 4)) < 0.7
    for fn in MATCHERS.values():
        batched = fn(iou, valid)
        for i in range(3):
            np.testing.assert_array_equal(batched[i], fn(iou[i], valid[i]))
