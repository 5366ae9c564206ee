"""FCOS's training loss and post-processing from head outputs (Tian et al. 2019), as
torchvision's FCOS.compute_loss / FCOSHead.compute_loss and FCOS.postprocess_detections
compute them, on fixed shapes.

Head outputs are `{"cls_logits": [B, A, K], "bbox_regression": [B, A, 4], "bbox_ctrness":
[B, A, 1]}` over the points' boxes [A, 4] of jaxvision.ops.anchor_grid (torchvision's
AnchorGenerator with one square box per position, its side the level's stride; the box's
centre is the point). Regression is FCOS's linear coding: the distances from the point to the
box's left, top, right and bottom sides divided by the point's box side (torchvision's
BoxLinearCoder(normalize_by_size=True)). Column k of the logits is class k, every column a
sigmoid, as torchvision.

Both functions are pure and jittable; `options` and `anchors_per_level` are static (close over
them or mark them static in jax.jit).
"""

import dataclasses

import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.ops.boxes import box_area, clip_boxes
from jaxvision.ops.losses import generalized_box_iou_loss, sigmoid_focal_loss
from jaxvision.ops.nms import select_detections

# torchvision's matching keeps, per point, the smallest ground truth: max of (1e8 - area).
_AREA_CEILING = 1e8


@dataclasses.dataclass(frozen=True)
class FCOSOptions:
    """torchvision FCOS's defaults.

    Matching: a point is foreground for a box when it lies inside it, within
    center_sampling_radius x its box side of the box's centre (in x and in y), and the box's
    farthest side is in the point's level range (4 to 8 box sides; the first level from 0,
    the last without bound); of several such boxes the smallest wins. Loss: the focal loss
    (focal_alpha, focal_gamma) over all points, GIoU of the decoded boxes and the centre-ness
    cross-entropy over the foreground, each summed and divided by max(1, foreground points in
    the batch). Post-processing: per level, scores sqrt(sigmoid(cls) * sigmoid(ctrness)) >
    score_thresh, the topk_candidates best (point, class) pairs; then class-aware NMS at
    nms_thresh and the detections_per_img best.
    """

    center_sampling_radius: float = 1.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    score_thresh: float = 0.2
    nms_thresh: float = 0.6
    detections_per_img: int = 100
    topk_candidates: int = 1000

    def __post_init__(self):
        if not self.center_sampling_radius > 0:
            raise UserError(
                f"--config.detection.center_sampling_radius={self.center_sampling_radius}: "
                "it is > 0 (torchvision's 1.5)"
            )
        if self.detections_per_img < 1 or self.topk_candidates < 1:
            raise UserError(
                f"--config.detection: detections_per_img ({self.detections_per_img}) and "
                f"topk_candidates ({self.topk_candidates}) are >= 1"
            )


def decode(codes: jax.Array, anchors: jax.Array) -> jax.Array:
    """torchvision's BoxLinearCoder(normalize_by_size=True).decode: codes [..., 4] (l, t, r, b
    over the box side), anchors [..., 4] xyxy (cast to codes' dtype) → boxes [..., 4] xyxy."""
    anchors = jnp.asarray(anchors).astype(codes.dtype)
    ctr_x = 0.5 * (anchors[..., 0] + anchors[..., 2])
    ctr_y = 0.5 * (anchors[..., 1] + anchors[..., 3])
    w = anchors[..., 2] - anchors[..., 0]
    h = anchors[..., 3] - anchors[..., 1]
    codes = codes * jnp.stack([w, h, w, h], axis=-1)
    return jnp.stack(
        [
            ctr_x - codes[..., 0],
            ctr_y - codes[..., 1],
            ctr_x + codes[..., 2],
            ctr_y + codes[..., 3],
        ],
        axis=-1,
    )


def encode(anchors: jax.Array, boxes: jax.Array) -> jax.Array:
    """BoxLinearCoder(normalize_by_size=True).encode(anchors, boxes): the distances from each
    anchor's centre to the box's sides over the anchor's side. [..., 4] xyxy → [..., 4]."""
    ctr_x = 0.5 * (anchors[..., 0] + anchors[..., 2])
    ctr_y = 0.5 * (anchors[..., 1] + anchors[..., 3])
    w = anchors[..., 2] - anchors[..., 0]
    h = anchors[..., 3] - anchors[..., 1]
    distances = jnp.stack(
        [
            ctr_x - boxes[..., 0],
            ctr_y - boxes[..., 1],
            boxes[..., 2] - ctr_x,
            boxes[..., 3] - ctr_y,
        ],
        axis=-1,
    )
    return distances / jnp.stack([w, h, w, h], axis=-1)


def match_points(
    anchors: jax.Array,
    boxes: jax.Array,
    boxes_mask: jax.Array,
    anchors_per_level: tuple[int, ...],
    radius: float,
) -> jax.Array:
    """torchvision FCOS.compute_loss's matching for one image: anchors [A, 4], boxes [M, 4]
    xyxy, boxes_mask [M] → [A] int32, the matched box's row or -1 (background).

    A point matches a box when its centre is strictly inside the box, within radius x its box
    side of the box's centre (the max over x and y), and the box's farthest side from it is in
    (4, 8) x its box side (the first level from 0, the last to infinity). Of its matches the
    one with the largest (1e8 - area) wins, computed in the boxes' dtype as torchvision (so in
    float32 areas within a rounding step of each other tie and the first row wins).
    """
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2  # [A, 2]
    sides = anchors[:, 2] - anchors[:, 0]  # [A]
    box_centres = (boxes[:, :2] + boxes[:, 2:]) / 2  # [M, 2]
    offset = jnp.max(jnp.abs(centres[:, None, :] - box_centres[None, :, :]), axis=-1)
    match = offset < radius * sides[:, None]
    x, y = centres[:, 0:1], centres[:, 1:2]  # [A, 1]
    distances = jnp.stack(
        [
            x - boxes[None, :, 0],
            y - boxes[None, :, 1],
            boxes[None, :, 2] - x,
            boxes[None, :, 3] - y,
        ],
        axis=-1,
    )  # [A, M, 4]
    match &= jnp.min(distances, axis=-1) > 0
    first, last = anchors_per_level[0], anchors_per_level[-1]
    index = jnp.arange(anchors.shape[0])
    lower = jnp.where(index < first, 0, sides * 4)
    upper = jnp.where(index >= anchors.shape[0] - last, jnp.inf, sides * 8)
    farthest = jnp.max(distances, axis=-1)
    match &= (farthest > lower[:, None]) & (farthest < upper[:, None])
    match &= boxes_mask[None, :]
    areas = box_area(boxes)  # rounded before the subtraction, as torch (no fused multiply-add)
    quality = match.astype(jnp.float32) * (_AREA_CEILING - areas)[None, :]
    matched = jnp.argmax(quality, axis=1).astype(jnp.int32)  # the first of equal maxima
    return jnp.where(jnp.max(quality, axis=1) < 1e-5, -1, matched)


def _image_loss(logits, codes, ctrness, anchors, boxes, classes, boxes_mask, options, levels):
    """One image's summed (classification, GIoU, centre-ness) losses and foreground count."""
    matched = match_points(anchors, boxes, boxes_mask, levels, options.center_sampling_radius)
    foreground = matched >= 0
    gt = jnp.maximum(matched, 0)
    targets = jax.nn.one_hot(classes[gt], logits.shape[-1], dtype=logits.dtype)
    targets = targets * foreground[:, None]
    focal = sigmoid_focal_loss(logits, targets, options.focal_alpha, options.focal_gamma)
    # Background points get their own box as target, so every term below stays finite.
    target_boxes = jnp.where(foreground[:, None], boxes[gt], anchors)
    giou = generalized_box_iou_loss(decode(codes, anchors), target_boxes)
    distances = encode(anchors, target_boxes)
    left_right, top_bottom = distances[:, 0::2], distances[:, 1::2]
    centreness = jnp.sqrt(
        (jnp.min(left_right, -1) / jnp.max(left_right, -1))
        * (jnp.min(top_bottom, -1) / jnp.max(top_bottom, -1))
    )
    centreness = jnp.where(foreground, centreness, 0)
    # torch's binary_cross_entropy_with_logits: (1 - t) x - log(sigmoid(x)).
    bce = (1 - centreness) * ctrness - jax.nn.log_sigmoid(ctrness)
    return (
        jnp.sum(focal),
        jnp.sum(jnp.where(foreground, giou, 0)),
        jnp.sum(jnp.where(foreground, bce, 0)),
        jnp.sum(foreground),
    )


def loss(
    outputs: dict,
    anchors: jax.Array,
    boxes: jax.Array,
    classes: jax.Array,
    boxes_mask: jax.Array,
    options: FCOSOptions = FCOSOptions(),
    anchors_per_level: tuple[int, ...] | None = None,
) -> tuple[jax.Array, dict]:
    """torchvision FCOS.compute_loss on a padded batch.

    outputs: {"cls_logits": [B, A, K], "bbox_regression": [B, A, 4], "bbox_ctrness":
    [B, A, 1]}; anchors: [A, 4] xyxy (the points' boxes); boxes: [B, M, 4] xyxy ground truth;
    classes: [B, M] int32 (column of cls_logits); boxes_mask: [B, M] bool (False: padding);
    anchors_per_level (static, required): the first and last levels' scale ranges are open.
    The focal loss over every point and class, the GIoU loss and the centre-ness
    cross-entropy over the foreground points, each summed over the batch and divided by
    max(1, the batch's foreground points), as torchvision (not per image). An image without
    boxes is all background. Computed in the outputs' dtype, at least float32.

    Returns (cls_loss + box_loss + ctrness_loss, {"cls_loss", "box_loss", "ctrness_loss"}).
    """
    if anchors_per_level is None:
        raise ValueError("FCOS's loss needs anchors_per_level (the levels' scale ranges)")
    levels = tuple(int(n) for n in anchors_per_level)
    if sum(levels) != anchors.shape[0]:
        raise ValueError(f"anchors_per_level sums to {sum(levels)}, not {anchors.shape[0]}")
    dtype = jnp.promote_types(outputs["cls_logits"].dtype, jnp.float32)
    anchors = jnp.asarray(anchors, dtype)
    per_image = jax.vmap(
        lambda lg, rg, ct, bx, cl, mk: _image_loss(
            lg, rg, ct[:, 0], anchors, bx, cl, mk, options, levels
        )
    )
    cls_sum, box_sum, ctrness_sum, count = per_image(
        jnp.asarray(outputs["cls_logits"], dtype),
        jnp.asarray(outputs["bbox_regression"], dtype),
        jnp.asarray(outputs["bbox_ctrness"], dtype),
        jnp.asarray(boxes, dtype),
        classes,
        jnp.asarray(boxes_mask, bool),
    )
    normaliser = jnp.maximum(1, jnp.sum(count)).astype(dtype)
    parts = {
        "cls_loss": jnp.sum(cls_sum) / normaliser,
        "box_loss": jnp.sum(box_sum) / normaliser,
        "ctrness_loss": jnp.sum(ctrness_sum) / normaliser,
    }
    return parts["cls_loss"] + parts["box_loss"] + parts["ctrness_loss"], parts


def _image_detections(logits, codes, ctrness, anchors, image_size, levels, options):
    num_classes = logits.shape[-1]
    cand_boxes, cand_scores, cand_classes, cand_valid = [], [], [], []
    start = 0
    for count in levels:
        level = slice(start, start + count)
        scores = jnp.sqrt(jax.nn.sigmoid(logits[level]) * jax.nn.sigmoid(ctrness[level]))
        scores = scores.reshape(-1)
        keep = scores > options.score_thresh
        k = min(options.topk_candidates, scores.shape[0])
        top_scores, top = jax.lax.top_k(jnp.where(keep, scores, -jnp.inf), k)
        anchor = start + top // num_classes
        boxes = decode(codes[anchor], anchors[anchor])
        cand_boxes.append(clip_boxes(boxes, image_size))
        cand_scores.append(top_scores)
        cand_classes.append((top % num_classes).astype(jnp.int32))
        cand_valid.append(keep[top])
        start += count
    boxes, scores, classes, valid = (
        jnp.concatenate(x) for x in (cand_boxes, cand_scores, cand_classes, cand_valid)
    )
    return select_detections(
        boxes, scores, classes, valid, options.nms_thresh, options.detections_per_img
    )


def postprocess(
    outputs: dict,
    anchors: jax.Array,
    anchors_per_level: tuple[int, ...],
    image_sizes: jax.Array,
    options: FCOSOptions = FCOSOptions(),
) -> dict:
    """torchvision FCOS.postprocess_detections on a batch.

    outputs: as `loss`'s; anchors: [A, 4]; anchors_per_level: static, summing to A;
    image_sizes: [B, 2] int (h, w) the boxes are clipped to. Per level: scores
    sqrt(sigmoid(cls_logits) * sigmoid(bbox_ctrness)) > score_thresh, the topk_candidates
    best (point, class) pairs, decoded and clipped; then class-aware NMS over all levels and
    the detections_per_img best.

    Returns {"boxes": [B, D, 4], "scores": [B, D], "classes": [B, D] int32, "valid": [B, D]
    bool}, D = detections_per_img, valid rows first by descending score, the rest zero.
    """
    levels = tuple(int(n) for n in anchors_per_level)
    if sum(levels) != anchors.shape[0]:
        raise ValueError(f"anchors_per_level sums to {sum(levels)}, not {anchors.shape[0]}")
    dtype = jnp.promote_types(outputs["cls_logits"].dtype, jnp.float32)
    anchors = jnp.asarray(anchors, dtype)
    per_image = jax.vmap(
        lambda lg, rg, ct, size: _image_detections(lg, rg, ct, anchors, size, levels, options)
    )
    return per_image(
        jnp.asarray(outputs["cls_logits"], dtype),
        jnp.asarray(outputs["bbox_regression"], dtype),
        jnp.asarray(outputs["bbox_ctrness"], dtype),
        jnp.asarray(image_sizes),
    )
