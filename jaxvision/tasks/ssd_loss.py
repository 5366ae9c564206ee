"""SSD's training loss and post-processing from head outputs (Liu et al. 2016), as
torchvision's SSD.compute_loss and postprocess_detections compute them, on fixed shapes.

Head outputs are `{"cls_logits": [B, A, K], "bbox_regression": [B, A, 4]}` over the default
boxes [A, 4] of jaxvision.ops.default_boxes (torchvision's order); the logits are a softmax
over K classes, class 0 the background. Both functions are pure and jittable; `options` is
static.
"""

import dataclasses

import jax
import jax.numpy as jnp
import optax

from jaxvision.ops.boxes import BoxCoder, box_iou, clip_boxes
from jaxvision.ops.losses import smooth_l1
from jaxvision.ops.matching import match_anchors_ssd
from jaxvision.ops.nms import select_detections


@dataclasses.dataclass(frozen=True)
class SSDOptions:
    """torchvision SSD's defaults.

    Matching: IoU >= iou_thresh is foreground, and every ground truth keeps its best default
    box. Loss: hard negatives at neg_to_pos_ratio per positive (torchvision's
    (1 - positive_fraction) / positive_fraction, 3 for 0.25). Post-processing: per foreground
    class, softmax scores > score_thresh, the topk_candidates best; then class-aware NMS at
    nms_thresh and the detections_per_img best.
    """

    iou_thresh: float = 0.5
    box_weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)
    neg_to_pos_ratio: float = 3.0
    score_thresh: float = 0.01
    nms_thresh: float = 0.45
    detections_per_img: int = 200
    topk_candidates: int = 400


def _image_loss(logits, regression, anchors, boxes, classes, boxes_mask, options):
    """One image: (box loss sum, classification loss sum, number of foreground anchors)."""
    matched = match_anchors_ssd(box_iou(boxes, anchors), boxes_mask, options.iou_thresh)
    foreground = matched >= 0
    gt = jnp.maximum(matched, 0)
    # Non-foreground anchors get themselves as target (code 0) so no log(0) reaches a gradient.
    target_boxes = jnp.where(foreground[:, None], boxes[gt], anchors)
    codes = BoxCoder(options.box_weights).encode(target_boxes, anchors)
    box_loss = jnp.sum(jnp.where(foreground[:, None], smooth_l1(regression, codes, beta=1.0), 0))

    cls_targets = jnp.where(foreground, classes[gt], 0)
    cls_loss = optax.softmax_cross_entropy_with_integer_labels(logits, cls_targets)
    # Hard negative mining as torchvision: rank all anchors by loss with the positives (class
    # > 0) at -inf, descending, ties in index order (torch's CPU sort is stable), and take the
    # ranks below ratio * positives. When that exceeds the negatives, positives at -inf are
    # taken too and counted twice, as in torchvision.
    positive = cls_targets > 0
    num_negative = options.neg_to_pos_ratio * jnp.sum(positive)
    order = jnp.argsort(-jnp.where(positive, -jnp.inf, cls_loss), stable=True)
    rank = jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0]))
    negative = rank < num_negative
    cls_sum = jnp.sum(jnp.where(positive, cls_loss, 0)) + jnp.sum(jnp.where(negative, cls_loss, 0))
    return box_loss, cls_sum, jnp.sum(foreground)


def loss(
    outputs: dict,
    anchors: jax.Array,
    boxes: jax.Array,
    classes: jax.Array,
    boxes_mask: jax.Array,
    options: SSDOptions = SSDOptions(),
) -> tuple[jax.Array, dict]:
    """torchvision SSD.compute_loss on a padded batch.

    outputs: {"cls_logits": [B, A, K], "bbox_regression": [B, A, 4]}; anchors: [A, 4] xyxy
    default boxes; boxes: [B, M, 4] xyxy; classes: [B, M] int32 (1..K-1); boxes_mask: [B, M]
    bool (False: padding). Smooth L1 (beta 1) on the BoxCoder(box_weights) codes of the
    foreground anchors, and softmax cross-entropy over the positives plus the hardest
    negatives (neg_to_pos_ratio per positive, per image); both summed over the batch and
    divided by max(1, foreground anchors in the batch).

    Returns (cls_loss + box_loss, {"cls_loss": scalar, "box_loss": scalar}), float32.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    per_image = jax.vmap(
        lambda lg, rg, bx, cl, mk: _image_loss(lg, rg, anchors, bx, cl, mk, options)
    )
    box_loss, cls_loss, num_foreground = per_image(
        outputs["cls_logits"].astype(jnp.float32),
        outputs["bbox_regression"].astype(jnp.float32),
        jnp.asarray(boxes, jnp.float32),
        classes,
        jnp.asarray(boxes_mask, bool),
    )
    normaliser = jnp.maximum(1, jnp.sum(num_foreground)).astype(jnp.float32)
    box_loss, cls_loss = jnp.sum(box_loss) / normaliser, jnp.sum(cls_loss) / normaliser
    return cls_loss + box_loss, {"cls_loss": cls_loss, "box_loss": box_loss}


def _image_detections(logits, regression, anchors, image_size, options):
    scores = jax.nn.softmax(logits, axis=-1)
    boxes = clip_boxes(BoxCoder(options.box_weights).decode(regression, anchors), image_size)
    num_anchors, num_classes = scores.shape
    class_scores = scores[:, 1:].T  # [K - 1, A]: one row per foreground class
    keep = class_scores > options.score_thresh
    k = min(options.topk_candidates, num_anchors)
    top_scores, top = jax.lax.top_k(jnp.where(keep, class_scores, -jnp.inf), k)
    labels = jnp.broadcast_to(jnp.arange(1, num_classes, dtype=jnp.int32)[:, None], top.shape)
    return select_detections(
        boxes[top.reshape(-1)],
        top_scores.reshape(-1),
        labels.reshape(-1),
        jnp.take_along_axis(keep, top, axis=1).reshape(-1),
        options.nms_thresh,
        options.detections_per_img,
    )


def postprocess(
    outputs: dict,
    anchors: jax.Array,
    image_sizes: jax.Array,
    options: SSDOptions = SSDOptions(),
) -> dict:
    """torchvision SSD.postprocess_detections on a batch.

    outputs: {"cls_logits": [B, A, K], "bbox_regression": [B, A, 4]}; anchors: [A, 4];
    image_sizes: [B, 2] int (h, w) the boxes are clipped to. Softmax scores; per foreground
    class, scores > score_thresh and the topk_candidates best; decoded, clipped; class-aware
    NMS over all classes and the detections_per_img best.

    Returns {"boxes": [B, D, 4], "scores": [B, D], "classes": [B, D] int32, "valid": [B, D]
    bool}, D = detections_per_img, valid rows first by descending score, the rest zero.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    per_image = jax.vmap(lambda lg, rg, size: _image_detections(lg, rg, anchors, size, options))
    return per_image(
        outputs["cls_logits"].astype(jnp.float32),
        outputs["bbox_regression"].astype(jnp.float32),
        jnp.asarray(image_sizes),
    )
