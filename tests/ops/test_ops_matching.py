"""Matcher and SSDMatcher against torchvision: ties, values on the thresholds, padded and
missing ground truth."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.ops.matching import match_anchors, match_anchors_ssd, match_atss

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


def _atss_reference(iou, boxes, anchors, valid, levels, topk):
    """ATSS written out one ground truth and one level at a time (numpy, float64)."""
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    best = np.full(anchors.shape[0], -np.inf)
    result = np.full(anchors.shape[0], -1)
    for g in np.flatnonzero(valid):
        gc = (boxes[g, :2] + boxes[g, 2:]) / 2
        distance = np.sum((centres - gc) ** 2, axis=1)
        candidates, start = [], 0
        for count in levels:
            order = np.argsort(distance[start : start + count], kind="stable")
            candidates += list(start + order[:topk])
            start += count
        threshold = iou[g, candidates].mean() + iou[g, candidates].std(ddof=1)
        for a in candidates:
            x, y = centres[a]
            inside = min(x - boxes[g, 0], y - boxes[g, 1], boxes[g, 2] - x, boxes[g, 3] - y) > 0.01
            if iou[g, a] >= threshold and inside and iou[g, a] > best[a]:
                best[a], result[a] = iou[g, a], g
    return result


def test_atss_matches_a_written_out_reference():
    from jaxvision.ops import anchor_grid, anchors_per_level, box_iou

    shapes, sizes, ratios = ((16, 16), (8, 8)), ((16, 20), (32, 40)), ((0.5, 1.0, 2.0),) * 2
    anchors = anchor_grid((128, 128), shapes, sizes, ratios)
    levels = anchors_per_level(shapes, sizes, ratios)
    rng = np.random.default_rng(0)
    match = jax.jit(match_atss, static_argnums=(4, 5))
    for trial in range(6):
        corner = rng.uniform(0, 100, (5, 2))
        boxes = np.concatenate([corner, corner + rng.uniform(12, 60, (5, 2))], 1)
        boxes = np.clip(boxes, 0, 128).astype(np.float32)
        valid = np.array([True, True, True, trial % 2 == 0, False])
        iou = np.asarray(box_iou(jnp.asarray(boxes), jnp.asarray(anchors)))
        for topk in (9, 27):
            ours = match(jnp.asarray(iou), boxes, anchors, valid, levels, topk)
            want = _atss_reference(iou.astype(np.float64), boxes, anchors, valid, levels, topk)
            np.testing.assert_array_equal(ours, want, err_msg=f"trial {trial}, topk {topk}")
            # Every valid box has positives; padding never matches; nothing is ignored.
            assert set(np.unique(ours)) <= {-1, *np.flatnonzero(valid)}
            assert all(np.any(np.asarray(ours) == g) for g in np.flatnonzero(valid))
    empty = match(
        jnp.zeros((0, anchors.shape[0])), np.zeros((0, 4)), anchors, np.zeros(0, bool), levels, 9
    )
    np.testing.assert_array_equal(empty, -1)
