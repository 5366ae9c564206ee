"""YOLO's training loss from head outputs, as the Ultralytics reference (YOLOv8 / YOLO11 /
YOLO26, v8DetectionLoss and E2ELoss) computes it, on fixed shapes.

Head outputs per image: `box_outputs [B, A, 4 * reg_max]`, channel `side * reg_max + bin` for
the sides (left, top, right, bottom), and `cls_logits [B, A, K]`, over the anchor points of
`jaxvision.ops.anchor_points` (grid units, with each point's stride). With reg_max > 1 a side's
distance is the expectation of a softmax over bins 0..reg_max-1 (Distribution Focal Loss, Li et
al. 2020); with reg_max 1 (YOLO26) the output is the distance itself. Distances are in grid
units: times the stride for pixels.

The loss: targets from the task-aligned assigner (jaxvision.ops.task_aligned_assign); binary
cross-entropy of every (anchor, class) against the alignment-scaled targets; over the
foreground, 1 - CIoU and the DFL (reg_max 1: the L1 distance of the sides over the image size),
each weighted by the anchor's target score; each term divided by max(sum of target scores, 1),
times its gain (box 7.5, cls 0.5, dfl 1.5). The reference then multiplies by the batch size and
its trainer sums the three.

All functions are pure and jittable; options are static.
"""

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.models.detection.yolo import box_distances
from jaxvision.ops.boxes import complete_box_iou
from jaxvision.ops.task_aligned import AlignedTargets, task_aligned_assign


@dataclasses.dataclass(frozen=True)
class YOLOLossOptions:
    """The reference's loss settings (its default.yaml and v8DetectionLoss).

    reg_max: bins per side (16; 1 for YOLO26's DFL-free head). strides: the head's levels,
    (8, 16, 32); the assigner widens boxes smaller than the second to it. topk, topk2: the
    assigner's candidates per ground truth (one-to-many: 10; one-to-one: 7 then 1).
    """

    reg_max: int = 16
    strides: tuple[float, ...] = (8.0, 16.0, 32.0)
    topk: int = 10
    topk2: int | None = None
    alpha: float = 0.5
    beta: float = 6.0
    box_gain: float = 7.5
    cls_gain: float = 0.5
    dfl_gain: float = 1.5

    @property
    def min_side(self) -> float:
        return self.strides[1] if len(self.strides) > 1 else self.strides[0]


# The reference's one-to-one branch: 7 candidates, then each ground truth's best one.
ONE_TO_ONE = {"topk": 7, "topk2": 1}


class YOLOLoss(NamedTuple):
    """total: scalar to differentiate, (box + cls + dfl) * batch size (the reference's loss
    vector times the batch size, summed as its trainer sums it). box, cls, dfl: the gained
    terms without the batch size and without gradient (the reference's loss items; dfl is
    its "l1_loss" with reg_max 1). targets: the assignment they were computed on."""

    total: jax.Array
    box: jax.Array
    cls: jax.Array
    dfl: jax.Array
    targets: AlignedTargets


def distances_to_boxes(distances: jax.Array, points: jax.Array) -> jax.Array:
    """distances [..., 4] (l, t, r, b), points [..., 2] (x, y) -> boxes [..., 4] xyxy."""
    return jnp.concatenate([points - distances[..., :2], points + distances[..., 2:]], axis=-1)


def boxes_to_distances(boxes: jax.Array, points: jax.Array) -> jax.Array:
    """The inverse of distances_to_boxes: boxes [..., 4] xyxy -> [..., 4] (l, t, r, b)."""
    return jnp.concatenate([points - boxes[..., :2], boxes[..., 2:] - points], axis=-1)


def distribution_focal_loss(bin_logits: jax.Array, targets: jax.Array) -> jax.Array:
    """bin_logits [..., 4, reg_max], targets [..., 4] distances in bins -> [...]: per side the
    cross-entropy against the two bins around the target, weighted by nearness (a target of 3.3
    is 0.7 of bin 3 and 0.3 of bin 4), averaged over the four sides. Targets are clamped to
    [0, reg_max - 1.01] first, as the reference, so the upper bin exists."""
    reg_max = bin_logits.shape[-1]
    targets = jnp.clip(targets, 0, reg_max - 1 - 0.01)
    left = jnp.floor(targets).astype(jnp.int32)
    left_weight = (left + 1) - targets
    log_probs = jax.nn.log_softmax(bin_logits, axis=-1)
    left_log_prob = jnp.take_along_axis(log_probs, left[..., None], axis=-1)[..., 0]
    right_log_prob = jnp.take_along_axis(log_probs, left[..., None] + 1, axis=-1)[..., 0]
    per_side = left_log_prob * left_weight + right_log_prob * (1 - left_weight)
    return -per_side.mean(axis=-1)


def _binary_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
    # torch's binary_cross_entropy_with_logits: (1 - t) x - log(sigmoid(x)).
    return (1 - targets) * logits - jax.nn.log_sigmoid(logits)


_UNIT_BOX = np.asarray([0.0, 0.0, 1.0, 1.0], np.float32)


def detection_loss(
    box_outputs: jax.Array,
    cls_logits: jax.Array,
    points: jax.Array,
    point_strides: jax.Array,
    gt_labels: jax.Array,
    gt_boxes: jax.Array,
    gt_mask: jax.Array,
    image_size: tuple[int, int],
    options: YOLOLossOptions = YOLOLossOptions(),
) -> YOLOLoss:
    """The reference's v8DetectionLoss on one head's outputs.

    box_outputs: [B, A, 4 * reg_max]; cls_logits: [B, A, K]; points: [A, 2] grid units and
    point_strides: [A] (jaxvision.ops.anchor_points); gt_labels: [B, M] int; gt_boxes: [B, M,
    4] xyxy pixels; gt_mask: [B, M] bool (False on padding); image_size: (H, W) of the input,
    used by reg_max 1's L1 term. Returns YOLOLoss.
    """
    reg_max = options.reg_max
    if box_outputs.shape[-1] != 4 * reg_max:
        raise ValueError(
            f"box_outputs has {box_outputs.shape[-1]} channels; reg_max {reg_max} needs "
            f"{4 * reg_max}"
        )
    batch = cls_logits.shape[0]
    strides = point_strides[:, None]
    pred_boxes = distances_to_boxes(box_distances(box_outputs), points)  # grid units
    targets = task_aligned_assign(
        jax.nn.sigmoid(cls_logits),
        pred_boxes * strides,
        points * strides,
        gt_labels,
        gt_boxes,
        gt_mask,
        topk=options.topk,
        topk2=options.topk2,
        alpha=options.alpha,
        beta=options.beta,
        min_side=options.min_side,
    )
    target_scores = targets.scores.astype(cls_logits.dtype)
    score_sum = jnp.maximum(target_scores.sum(), 1)
    cls = _binary_cross_entropy(cls_logits, target_scores).sum() / score_sum

    foreground = targets.foreground
    weight = jnp.where(foreground, target_scores.sum(-1), 0)  # [B, A]
    target_boxes = targets.boxes / strides  # grid units
    # Background anchors' boxes are swapped for a unit box before the CIoU, so that a degenerate
    # pair there cannot make a NaN that the mask would pass on to the gradient.
    fg = foreground[..., None]
    iou = complete_box_iou(
        jnp.where(fg, pred_boxes, _UNIT_BOX), jnp.where(fg, target_boxes, _UNIT_BOX)
    )
    box = ((1 - iou) * weight).sum() / score_sum

    target_distances = boxes_to_distances(target_boxes, points)
    if reg_max > 1:
        bins = box_outputs.reshape(*box_outputs.shape[:-1], 4, reg_max)
        side_loss = distribution_focal_loss(bins, jnp.clip(target_distances, 0, reg_max - 1 - 0.01))
    else:
        # Distances in pixels over the image's width (l, r) or height (t, b).
        height, width = image_size
        scale = jnp.asarray([width, height, width, height], box_outputs.dtype)
        side_loss = jnp.abs(
            box_outputs * strides / scale - target_distances * strides / scale
        ).mean(-1)
    dfl = (side_loss * weight).sum() / score_sum

    box, cls, dfl = box * options.box_gain, cls * options.cls_gain, dfl * options.dfl_gain
    terms = [jax.lax.stop_gradient(t) for t in (box, cls, dfl)]
    return YOLOLoss((box + cls + dfl) * batch, *terms, targets)


def end_to_end_weights(epoch, epochs: int) -> tuple:
    """The reference's (E2ELoss) weights of the one-to-many and one-to-one losses after `epoch`
    finished epochs of `epochs`: one-to-many falls linearly from 0.8 (epoch 0) to 0.1 (epoch
    epochs - 1, and after), one-to-one is 1 minus it (0.2 to 0.9). epoch may be traced."""
    start, end = 0.8, 0.1
    fraction = jnp.maximum(1 - epoch / max(epochs - 1, 1), 0)
    one_to_many = fraction * (start - end) + end
    return one_to_many, jnp.maximum(1 - one_to_many, 0)


class EndToEndLoss(NamedTuple):
    """total: one_to_many_weight * the one-to-many total + one_to_one_weight * the one-to-one
    total (each as YOLOLoss.total). box, cls, dfl: the one-to-one branch's terms, unweighted,
    as the reference reports. one_to_many, one_to_one: each branch's YOLOLoss."""

    total: jax.Array
    box: jax.Array
    cls: jax.Array
    dfl: jax.Array
    one_to_many: YOLOLoss
    one_to_one: YOLOLoss


def end_to_end_loss(
    one_to_many: tuple[jax.Array, jax.Array],
    one_to_one: tuple[jax.Array, jax.Array],
    points: jax.Array,
    point_strides: jax.Array,
    gt_labels: jax.Array,
    gt_boxes: jax.Array,
    gt_mask: jax.Array,
    image_size: tuple[int, int],
    epoch,
    epochs: int,
    options: YOLOLossOptions = YOLOLossOptions(),
) -> EndToEndLoss:
    """The reference's E2ELoss (YOLOv10 / YOLO26 heads): detection_loss on the one-to-many
    head's (box_outputs, cls_logits) with options.topk, and on the one-to-one head's with topk 7
    then topk2 1 (ONE_TO_ONE), weighted by end_to_end_weights(epoch, epochs). The one-to-one
    head sees detached features in the model, so its loss trains only that head."""
    truth = (points, point_strides, gt_labels, gt_boxes, gt_mask, image_size)
    many = detection_loss(*one_to_many, *truth, options)
    one = detection_loss(*one_to_one, *truth, dataclasses.replace(options, **ONE_TO_ONE))
    many_weight, one_weight = end_to_end_weights(epoch, epochs)
    total = many.total * many_weight + one.total * one_weight
    return EndToEndLoss(total, one.box, one.cls, one.dfl, many, one)
