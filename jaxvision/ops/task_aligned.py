"""The task-aligned assigner (TOOD, Feng et al. 2021) on fixed shapes, as the YOLO reference
(Ultralytics YOLOv8 / YOLO11 / YOLO26) assigns its training targets.

Each ground truth scores every anchor by score^alpha * CIoU^beta (its class's predicted score,
the complete IoU of the anchor's predicted box with it); its candidates are the anchors whose
centres lie inside it, and of those it keeps the ones among its topk best scores. An anchor kept
by several ground truths goes to the one its predicted box overlaps most. The classification
targets are one-hot, scaled so that each ground truth's best anchor gets that anchor's IoU.

Ground truth is padded to a fixed M with a mask, so one jitted function serves every batch.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvision.ops.boxes import complete_box_iou


class AlignedTargets(NamedTuple):
    """What task_aligned_assign gives each anchor (B images, A anchors, K classes).

    labels: [B, A] int32, the assigned ground truth's class (that of ground truth 0 for
        background anchors, as the reference). boxes: [B, A, 4] its box, xyxy pixels (ground
        truth 0's for background). scores: [B, A, K] float, one-hot at the label times the
        alignment-normalised score, 0 for background. foreground: [B, A] bool. gt_index: [B, A]
        int32, the assigned row of the padded ground truth (0 for background).
    """

    labels: jax.Array
    boxes: jax.Array
    scores: jax.Array
    foreground: jax.Array
    gt_index: jax.Array


def centres_in_boxes(
    anchor_points: jax.Array, gt_boxes: jax.Array, gt_mask: jax.Array, min_side: float, eps=1e-9
) -> jax.Array:
    """Which anchor centres lie strictly inside each ground-truth box (by more than eps).

    anchor_points: [A, 2] (x, y) pixels; gt_boxes: [B, M, 4] xyxy pixels; gt_mask: [B, M] bool
    -> [B, M, A] bool. A valid box narrower or lower than min_side (the reference: its second
    stride, 16) is first widened or heightened to min_side about its centre, so a small object
    still has candidate anchors on the coarser levels. Padded rows are not widened (their
    candidates are dropped by the caller).
    """
    centre = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2
    size = gt_boxes[..., 2:] - gt_boxes[..., :2]
    size = jnp.where(
        (size < min_side) & gt_mask[..., None], jnp.asarray(min_side, size.dtype), size
    )
    # Back to corners as the reference's xywh -> xyxy does: centre -/+ size / 2.
    half = size / 2
    lt, rb = centre - half, centre + half
    x, y = anchor_points[:, 0], anchor_points[:, 1]
    inside = (x - lt[..., 0:1]) > eps
    inside &= (y - lt[..., 1:2]) > eps
    inside &= (rb[..., 0:1] - x) > eps
    inside &= (rb[..., 1:2] - y) > eps
    return inside


def _top_k_mask(values: jax.Array, k: int) -> jax.Array:
    """[..., A] -> [..., A] bool, True at the k largest along the last axis (lower index first
    on ties)."""
    _, index = jax.lax.top_k(values, k)
    rows = jnp.indices(index.shape[:-1], sparse=True)
    mask = jnp.zeros(values.shape, bool)
    return mask.at[(*(r[..., None] for r in rows), index)].set(True)


def _power(x: jax.Array, exponent: float) -> jax.Array:
    # The reference's pow takes 0.5 as a square root and 1 as the identity: the same here, so the
    # metric's rounding (and so the top-k order) is theirs.
    if exponent == 0.5:
        return jnp.sqrt(x)
    if exponent == 1:
        return x
    return x**exponent


def task_aligned_assign(
    pred_scores: jax.Array,
    pred_boxes: jax.Array,
    anchor_points: jax.Array,
    gt_labels: jax.Array,
    gt_boxes: jax.Array,
    gt_mask: jax.Array,
    *,
    topk: int = 10,
    topk2: int | None = None,
    alpha: float = 0.5,
    beta: float = 6.0,
    min_side: float = 16.0,
    eps: float = 1e-9,
) -> AlignedTargets:
    """The reference's TaskAlignedAssigner(topk, alpha, beta, stride, topk2) on padded ground
    truth; no gradient flows through it.

    pred_scores: [B, A, K] class probabilities (sigmoid); pred_boxes: [B, A, 4] xyxy pixels;
    anchor_points: [A, 2] (x, y) pixels; gt_labels: [B, M] int; gt_boxes: [B, M, 4] xyxy
    pixels; gt_mask: [B, M] bool, False on padding rows (anywhere, not only at the end).
    min_side: the reference's stride_val (its second stride; the only stride with one level).

    Steps, as the reference: candidates are anchors inside the (small-box-enlarged) box; each
    ground truth keeps its topk anchors by metric that are candidates; an anchor kept by several
    takes the ground truth of highest CIoU with its predicted box (first on ties, over all rows);
    with topk2 (the one-to-one branch: 7 then 1) each ground truth then keeps only its topk2
    best remaining anchors. Target scores: one-hot times, per anchor, the largest over ground
    truths of metric * (that ground truth's best CIoU) / (its best metric + eps).

    Ties in the top-k: lax.top_k keeps the lower anchor index; torch's CPU top-k keeps an
    unspecified one. They differ only where a ground truth has fewer than topk candidates with
    a non-zero metric and another candidate with a metric of exactly 0 (CIoU <= 0).
    """
    batch, anchors, num_classes = pred_scores.shape
    num_gt = gt_boxes.shape[1]
    pred_scores = jax.lax.stop_gradient(pred_scores)
    pred_boxes = jax.lax.stop_gradient(pred_boxes)
    gt_mask = gt_mask.astype(bool)
    if num_gt == 0:  # the reference's early answer for a batch without ground truth
        return AlignedTargets(
            labels=jnp.full((batch, anchors), num_classes, jnp.int32),
            boxes=jnp.zeros_like(pred_boxes),
            scores=jnp.zeros_like(pred_scores),
            foreground=jnp.zeros((batch, anchors), bool),
            gt_index=jnp.zeros((batch, anchors), jnp.int32),
        )
    gt_labels = gt_labels.astype(jnp.int32)

    inside = centres_in_boxes(anchor_points, gt_boxes, gt_mask, min_side)
    candidate = inside & gt_mask[..., None]  # [B, M, A]
    # The predicted score of each ground truth's class at every anchor: [B, M, A].
    class_index = jnp.broadcast_to(
        jnp.clip(gt_labels, 0, num_classes - 1)[..., None], (batch, num_gt, anchors)
    )
    score = jnp.take_along_axis(jnp.swapaxes(pred_scores, 1, 2), class_index, axis=1)
    ciou = complete_box_iou(gt_boxes[:, :, None, :], pred_boxes[:, None, :, :])
    overlaps = jnp.where(candidate, jnp.maximum(ciou, 0), 0)
    metric = jnp.where(candidate, _power(score, alpha) * _power(overlaps, beta), 0)

    positive = _top_k_mask(metric, topk) & candidate  # [B, M, A]

    # An anchor kept by several ground truths goes to its highest overlap (first on ties).
    claimed = positive.sum(axis=1) > 1  # [B, A]
    best = jnp.argmax(overlaps, axis=1)  # [B, A]
    best_mask = jnp.arange(num_gt)[None, :, None] == best[:, None, :]
    positive = jnp.where(claimed[:, None, :], best_mask, positive)
    if topk2 is not None and topk2 != topk:
        positive &= _top_k_mask(metric * positive, topk2)

    foreground = positive.any(axis=1)
    gt_index = jnp.argmax(positive, axis=1).astype(jnp.int32)  # 0 where nothing is assigned

    labels = jnp.maximum(jnp.take_along_axis(gt_labels, gt_index, axis=1), 0)
    boxes = jnp.take_along_axis(gt_boxes, gt_index[..., None], axis=1)
    one_hot = jax.nn.one_hot(labels, num_classes, dtype=pred_scores.dtype) * foreground[..., None]

    metric = metric * positive
    best_metric = metric.max(axis=-1, keepdims=True)  # [B, M, 1]
    best_overlap = (overlaps * positive).max(axis=-1, keepdims=True)
    normalised = (metric * best_overlap / (best_metric + eps)).max(axis=1)  # [B, A]
    return AlignedTargets(
        labels=labels,
        boxes=boxes,
        scores=one_hot * normalised[..., None],
        foreground=foreground,
        gt_index=gt_index,
    )
