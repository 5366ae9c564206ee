"""Anchor-to-ground-truth matching on fixed shapes: torchvision's det_utils.Matcher and
SSDMatcher, with padded ground-truth rows masked out.

A match is the ground-truth index for each anchor, or BELOW_LOW_THRESHOLD (-1: background) or
BETWEEN_THRESHOLDS (-2: ignored), as torchvision's.
"""

import jax
import jax.numpy as jnp

BELOW_LOW_THRESHOLD = -1
BETWEEN_THRESHOLDS = -2


def _masked(iou: jax.Array, gt_valid: jax.Array) -> jax.Array:
    """Padding rows at -inf: below every real IoU, so they never win a max."""
    return jnp.where(gt_valid[..., :, None], iou, -jnp.inf)


def match_anchors(
    iou: jax.Array,
    gt_valid: jax.Array,
    high_threshold: float,
    low_threshold: float,
    allow_low_quality_matches: bool = False,
) -> jax.Array:
    """torchvision's Matcher(high_threshold, low_threshold, allow_low_quality_matches).

    iou: [..., M, A] (ground truth x anchors); gt_valid: [..., M] bool (padding rows never
    match) -> [..., A] int32: the best ground truth (first index on ties) where its IoU is
    >= high_threshold, -2 where it is in [low, high), -1 below low.

    allow_low_quality_matches: also give each ground truth the anchors whose IoU with it equals
    its best IoU (every tie, even a best IoU of 0), each such anchor taking its own best ground
    truth, as torchvision. With no valid ground truth every anchor is -1 (torchvision raises;
    its detectors then mark all anchors background, as here).
    """
    if low_threshold > high_threshold:
        raise ValueError(f"low_threshold {low_threshold} > high_threshold {high_threshold}")
    if iou.shape[-2] == 0:  # no ground-truth rows at all
        return jnp.full(iou.shape[:-2] + iou.shape[-1:], BELOW_LOW_THRESHOLD, jnp.int32)
    masked = _masked(iou, gt_valid)
    best = jnp.max(masked, axis=-2)
    matches = jnp.argmax(masked, axis=-2).astype(jnp.int32)
    result = jnp.where(
        best < low_threshold,
        BELOW_LOW_THRESHOLD,
        jnp.where(best < high_threshold, BETWEEN_THRESHOLDS, matches),
    )
    if allow_low_quality_matches:
        best_per_gt = jnp.max(masked, axis=-1, keepdims=True)
        ties = (masked == best_per_gt) & gt_valid[..., :, None]
        result = jnp.where(jnp.any(ties, axis=-2), matches, result)
    return result.astype(jnp.int32)


def match_anchors_ssd(iou: jax.Array, gt_valid: jax.Array, threshold: float) -> jax.Array:
    """torchvision's SSDMatcher(threshold): Matcher(threshold, threshold) (so -1 below, never
    -2), then each valid ground truth takes its best anchor (first index on ties) whatever the
    IoU. Where several ground truths share a best anchor the highest index wins, as the last
    write does in torch's (sequential, CPU) index assignment.

    iou: [..., M, A]; gt_valid: [..., M] bool -> [..., A] int32.
    """
    result = match_anchors(iou, gt_valid, threshold, threshold, False)
    if iou.shape[-2] == 0:
        return result
    num_gt, num_anchors = iou.shape[-2], iou.shape[-1]
    best_anchor = jnp.argmax(_masked(iou, gt_valid), axis=-1)  # [..., M]
    hit = (best_anchor[..., :, None] == jnp.arange(num_anchors)) & gt_valid[..., :, None]
    forced = jnp.max(jnp.where(hit, jnp.arange(num_gt)[:, None], -1), axis=-2)
    return jnp.where(forced >= 0, forced, result).astype(jnp.int32)


def match_atss(
    iou: jax.Array,
    gt_boxes: jax.Array,
    anchors: jax.Array,
    gt_valid: jax.Array,
    anchors_per_level: tuple[int, ...],
    topk: int = 9,
) -> jax.Array:
    """Adaptive Training Sample Selection (Zhang et al. 2020, "Bridging the Gap Between
    Anchor-based and Anchor-free Detection"), for one image.

    For each ground truth, the candidates are the `topk` anchors of each pyramid level whose
    centres lie nearest its centre (first index on ties); its IoU threshold is the mean plus the
    standard deviation (ddof 1) of its candidates' IoUs. An anchor is its foreground when it is a
    candidate, reaches the threshold and has its centre inside the box; an anchor foreground
    for several takes the one of highest IoU (first index on ties). Every other anchor is
    background (-1): nothing is ignored. The threshold adapts to each object's candidates, so
    small and large objects get similar numbers of positives.

    iou: [M, A]; gt_boxes: [M, 4] xyxy; anchors: [A, 4] xyxy in level order; gt_valid: [M]
    bool; anchors_per_level: static, summing to A -> [A] int32.
    """
    num_gt, num_anchors = iou.shape
    if sum(anchors_per_level) != num_anchors:
        raise ValueError(f"anchors_per_level sums to {sum(anchors_per_level)}, not {num_anchors}")
    if num_gt == 0:
        return jnp.full((num_anchors,), BELOW_LOW_THRESHOLD, jnp.int32)
    anchor_centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    gt_centres = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    distance = jnp.sum((gt_centres[:, None, :] - anchor_centres[None]) ** 2, axis=-1)
    candidate = jnp.zeros((num_gt, num_anchors), bool)
    rows = jnp.arange(num_gt)[:, None]
    start = 0
    for count in anchors_per_level:
        _, nearest = jax.lax.top_k(-distance[:, start : start + count], min(topk, count))
        candidate = candidate.at[rows, start + nearest].set(True)
        start += count
    chosen = jnp.sum(candidate, axis=-1, keepdims=True)
    mean = jnp.sum(jnp.where(candidate, iou, 0), axis=-1, keepdims=True) / chosen
    spread = jnp.where(candidate, (iou - mean) ** 2, 0)
    std = jnp.sqrt(jnp.sum(spread, axis=-1, keepdims=True) / jnp.maximum(chosen - 1, 1))
    x, y = anchor_centres[None, :, 0], anchor_centres[None, :, 1]
    inside = (
        jnp.minimum(
            jnp.minimum(x - gt_boxes[:, None, 0], y - gt_boxes[:, None, 1]),
            jnp.minimum(gt_boxes[:, None, 2] - x, gt_boxes[:, None, 3] - y),
        )
        > 0.01
    )
    positive = candidate & (iou >= mean + std) & inside & gt_valid[:, None]
    masked = jnp.where(positive, iou, -jnp.inf)
    matches = jnp.argmax(masked, axis=0).astype(jnp.int32)
    return jnp.where(jnp.any(positive, axis=0), matches, BELOW_LOW_THRESHOLD).astype(jnp.int32)
