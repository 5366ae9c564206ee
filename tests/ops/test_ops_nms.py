"""NMS against torchvision.ops.nms / batched_nms (stored and fresh cases), and its fixed-shape
behaviour: padding, masks, truncation, ties, vmap, memory."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.ops.nms import batched_nms, nms, select_detections


def _select(boxes, scores, classes, valid, threshold, max_output, class_aware, tile_size=64):
    if class_aware:
        return batched_nms(
            boxes, scores, classes, threshold, max_output, valid, tile_size=tile_size
        )
    return nms(boxes, scores, threshold, max_output, valid, tile_size=tile_size)


# A traced threshold (one compilation for all), compared in the IoU's float32.
_run = jax.jit(_select, static_argnames=("max_output", "class_aware", "tile_size"))
# A static threshold (a Python float), compared as a double as torchvision does.
_run_at = jax.jit(_select, static_argnames=("threshold", "max_output", "class_aware"))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _nms(boxes, scores, threshold, max_output, valid=None):
    return nms(boxes, scores, threshold, max_output, valid)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _batched_nms(boxes, scores, classes, threshold, max_output):
    return batched_nms(boxes, scores, classes, threshold, max_output)


def _kept(indices, kept):
    return np.asarray(indices)[np.asarray(kept)]


@pytest.mark.slow
def test_nms_matches_torchvision(cases):
    for case in cases("nms"):
        for i, sub in enumerate(case["cases"]):
            n, expected = len(sub["boxes"]), sub["keep"]
            # Tiles of 64: suppression crosses tiles; max_output n: everything kept returned.
            ours = _kept(
                *_run(
                    sub["boxes"],
                    sub["scores"],
                    sub["classes"],
                    sub["valid"],
                    float(sub["threshold"]),
                    max_output=n,
                    class_aware=bool(sub["class_aware"]),
                    tile_size=64,
                )
            )
            if bool(sub["class_aware"]):
                # torchvision's per-class path re-sorts its result unstably: equal scores may
                # come in either order. The set and the score order are the same.
                assert set(ours.tolist()) == set(expected.tolist()), i
                np.testing.assert_array_equal(sub["scores"][ours], sub["scores"][expected])
            else:
                # Same order too, ties included (both visit equal scores in index order).
                np.testing.assert_array_equal(ours, expected, err_msg=str(i))
            # Truncated output: the first max_output of the full answer.
            if bool(sub["class_aware"]):
                head = _kept(
                    *_run(
                        sub["boxes"],
                        sub["scores"],
                        sub["classes"],
                        sub["valid"],
                        float(sub["threshold"]),
                        max_output=17,
                        class_aware=True,
                        tile_size=64,
                    )
                )
                np.testing.assert_array_equal(head, ours[:17])


@pytest.mark.slow
def test_nms_compares_the_iou_with_the_threshold_as_a_double():
    # IoU 3 / 5 is float32(0.6), which is above 0.6: torchvision (float IoU, double threshold)
    # suppresses box 1.
    boxes = jnp.array([[0.0, 0.0, 4.0, 1.0], [1.0, 0.0, 5.0, 1.0]])
    scores = jnp.array([0.9, 0.8])
    np.testing.assert_array_equal(_kept(*_nms(boxes, scores, 0.6, 2)), [0])
    classes = jnp.zeros(2, jnp.int32)
    np.testing.assert_array_equal(_kept(*_batched_nms(boxes, scores, classes, 0.6, 2)), [0])
    select = jax.jit(select_detections, static_argnums=(4, 5))
    out = select(boxes, scores, classes, jnp.ones(2, bool), 0.6, 2)
    np.testing.assert_array_equal(out["valid"], [True, False])
    # float32(1 / 3) rounds up too (IoU 2 / 6 goes); float32(0.7) rounds down (7 / 10 stays).
    third = jnp.array([[0.0, 0.0, 4.0, 1.0], [2.0, 0.0, 6.0, 1.0]])
    np.testing.assert_array_equal(_kept(*_nms(third, scores, 1 / 3, 2)), [0])
    seven = jnp.array([[0.0, 0.0, 10.0, 1.0], [0.0, 0.0, 7.0, 1.0]])
    np.testing.assert_array_equal(_kept(*_nms(seven, scores, 0.7, 2)), [0, 1])


def test_above_threshold_is_the_double_comparison():
    from jaxvision.ops.nms import above_threshold

    # (Not 0: its float32 neighbours are subnormal, which XLA's CPU flushes to zero.)
    for threshold in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1 / 3, 2 / 3, 0.45, 1.0]:
        t32 = np.float32(threshold)
        near = np.array([np.nextafter(t32, -1), t32, np.nextafter(t32, 2)], np.float32)
        expected = near.astype(np.float64) > threshold
        np.testing.assert_array_equal(above_threshold(jnp.asarray(near), threshold), expected)
        # A float32 array threshold is that float32 value, exactly.
        np.testing.assert_array_equal(
            above_threshold(jnp.asarray(near), np.float32(threshold)), near > t32
        )


@pytest.mark.slow
def test_nms_on_integer_grids_matches_torchvision(cases):
    """IoUs of whole-pixel boxes hit thresholds exactly; NaN scores come first, as theirs."""
    for case in cases("nms_grid"):
        boxes, classes = case["boxes"], case["classes"]
        for i, sub in enumerate(case["cases"]):
            threshold, class_aware = float(sub["threshold"]), bool(sub["class_aware"])
            label = f"case {i}: threshold {threshold} class_aware {class_aware}"
            ours = _kept(
                *_run_at(
                    boxes,
                    sub["scores"],
                    classes,
                    sub["valid"],
                    threshold=threshold,
                    max_output=len(boxes),
                    class_aware=class_aware,
                )
            )
            expected = sub["keep"]
            assert len(ours) == len(expected), (label, len(ours), len(expected))
            if class_aware:
                assert set(ours.tolist()) == set(expected.tolist()), label
                np.testing.assert_array_equal(sub["scores"][ours], sub["scores"][expected])
            else:
                np.testing.assert_array_equal(ours, expected, err_msg=label)


def test_nan_scores_are_visited_first_in_index_order():
    # torchvision's descending sort puts NaN first; such boxes are kept and suppress.
    boxes = jnp.array([[0, 0, 1, 1], [10, 10, 11, 11], [20, 20, 21, 21], [0, 0, 1, 1.0]])
    scores = jnp.array([0.9, np.nan, 0.3, np.nan])
    np.testing.assert_array_equal(_kept(*_nms(boxes, scores, 0.5, 4)), [1, 3, 2])


def test_nms_ties_go_to_the_lower_index():
    # Three equal-score boxes in a row, each overlapping the next by IoU 0.82: greedy in index
    # order keeps 0 (suppressing 1), then 2 is suppressed by 0 only if IoU(0, 2) > 0.5 (0.67).
    boxes = jnp.array([[0, 0, 10, 10], [1, 0, 11, 10], [2, 0, 12, 10], [20, 20, 30, 30.0]])
    scores = jnp.array([0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(_kept(*_nms(boxes, scores, 0.5, 4)), [0, 3])
    np.testing.assert_array_equal(_kept(*_nms(boxes[::-1], scores, 0.5, 4)), [0, 1])
    # Identical boxes and scores: only the first survives.
    same = jnp.tile(jnp.array([[1.0, 2.0, 5.0, 9.0]]), (5, 1))
    np.testing.assert_array_equal(_kept(*_nms(same, jnp.ones(5), 0.5, 5)), [0])


def test_nms_threshold_is_strict_and_degenerate_boxes_never_suppress():
    # IoU exactly 0.5: torchvision suppresses only above the threshold.
    boxes = jnp.array([[0.0, 0.0, 4.0, 1.0], [0.0, 0.0, 2.0, 1.0]])  # IoU 2 / 4
    np.testing.assert_array_equal(_kept(*_nms(boxes, jnp.array([0.9, 0.8]), 0.5, 2)), [0, 1])
    np.testing.assert_array_equal(_kept(*_nms(boxes, jnp.array([0.9, 0.8]), 0.49, 2)), [0])
    points = jnp.array([[3.0, 3.0, 3.0, 3.0], [3.0, 3.0, 3.0, 3.0]])  # union 0
    np.testing.assert_array_equal(_kept(*_nms(points, jnp.array([0.9, 0.8]), 0.5, 2)), [0, 1])


def test_invalid_boxes_are_never_kept_and_never_suppress():
    boxes = jnp.array([[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 11, 11.0]])
    scores = jnp.array([0.9, 0.8, 0.7])
    valid = jnp.array([False, True, True])
    np.testing.assert_array_equal(_kept(*_nms(boxes, scores, 0.5, 3, valid)), [1])
    indices, kept = _nms(boxes, scores, 0.5, 3, jnp.zeros(3, bool))
    assert not kept.any() and (np.asarray(indices) == 0).all()


def test_nms_padding_and_empty_inputs():
    indices, kept = _nms(jnp.zeros((0, 4)), jnp.zeros((0,)), 0.5, 5)
    assert indices.shape == (5,) and indices.dtype == jnp.int32 and not kept.any()
    boxes = jnp.array([[0, 0, 10, 10], [20, 20, 30, 30.0]])
    indices, kept = _nms(boxes, jnp.array([0.1, 0.2]), 0.5, 4)
    np.testing.assert_array_equal(indices, [1, 0, 0, 0])
    np.testing.assert_array_equal(kept, [True, True, False, False])
    assert _nms(boxes, jnp.array([0.1, 0.2]), 0.5, 0)[0].shape == (0,)


def test_batched_nms_keeps_overlapping_boxes_of_other_classes():
    boxes = jnp.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.0]])
    scores = jnp.array([0.9, 0.8, 0.7])
    classes = jnp.array([1, 2, 1])
    np.testing.assert_array_equal(_kept(*_batched_nms(boxes, scores, classes, 0.5, 3)), [0, 1])


def test_nms_vmaps_over_a_batch():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 50, (3, 200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (3, 200, 2))], -1).astype(np.float32)
    scores = rng.random((3, 200)).astype(np.float32)
    valid = rng.random((3, 200)) < 0.8

    def one(b, s, v):
        return nms(b, s, 0.5, 50, v, tile_size=32)

    indices, kept = jax.jit(jax.vmap(one))(boxes, scores, valid)
    for i in range(3):
        single = jax.jit(one)(boxes[i], scores[i], valid[i])
        np.testing.assert_array_equal(indices[i], single[0])
        np.testing.assert_array_equal(kept[i], single[1])


def _largest_intermediate(jaxpr) -> int:
    """The most elements of any value in a jaxpr, nested jaxprs (loop bodies) included."""
    largest = 0
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            largest = max(largest, int(np.prod(getattr(var.aval, "shape", ()))))
        for param in eqn.params.values():
            for sub in param if isinstance(param, list | tuple) else [param]:
                inner = getattr(sub, "jaxpr", None)
                if inner is not None:
                    largest = max(largest, _largest_intermediate(getattr(inner, "jaxpr", inner)))
    return largest


def test_nms_never_builds_an_n_by_n_matrix():
    n = 20_000
    jaxpr = jax.make_jaxpr(lambda b, s, c: batched_nms(b, s, c, 0.5, 300))(
        jnp.zeros((n, 4)), jnp.zeros((n,)), jnp.zeros((n,), jnp.int32)
    )
    # Tiles of 256: [256, 256, 2] corner pairs and [N, 4] arrays, nothing near N x N.
    assert _largest_intermediate(jaxpr.jaxpr) <= max(4 * (n + 256), 2 * 256 * 256)


def test_select_detections_zeroes_padding_rows():
    boxes = jnp.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30.0]])
    select = jax.jit(select_detections, static_argnums=(4, 5))
    out = select(
        boxes, jnp.array([0.9, 0.8, 0.3]), jnp.array([1, 1, 2]), jnp.array([True] * 3), 0.5, 4
    )
    np.testing.assert_array_equal(out["valid"], [True, True, False, False])
    np.testing.assert_array_equal(out["classes"], [1, 2, 0, 0])
    np.testing.assert_allclose(out["scores"], [0.9, 0.3, 0, 0])
    np.testing.assert_array_equal(out["boxes"][1], [20, 20, 30, 30])
    np.testing.assert_array_equal(out["boxes"][2:], 0)


def test_benchmark_rows():
    from benchmarks.nms import benchmark_rows

    rows = benchmark_rows([64], classes=3, max_outputs=["all"], repeats=1)
    assert [(r["op"], r["n"], r["max_output"]) for r in rows] == [
        ("nms", 64, 64),
        ("batched_nms", 64, 64),
    ]
    for row in rows:
        assert 0 < row["kept"] <= 64 and row["ours_ms"] > 0
        if "torch_ms" in row:  # where torchvision is installed
            assert row["same_kept"] and row["torch_over_ours"] > 0
