"""RetinaNet's training loss and post-processing from head outputs (Lin et al. 2017), as
torchvision's RetinaNet.compute_loss and postprocess_detections compute them, on fixed shapes.

Head outputs are `{"cls_logits": [B, A, K], "bbox_regression": [B, A, 4]}` over the anchors
[A, 4] of jaxvision.ops.anchor_grid (torchvision's order). Column k of the logits is class k:
torchvision trains every column as a sigmoid, column 0 (background) included, and it is never
a positive for a ground truth of a foreground class.

Both functions are pure and jittable; `options` and `num_anchors_per_level` are static (close
over them or mark them static in jax.jit).
"""

import dataclasses

import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.ops.boxes import BoxCoder, box_iou, clip_boxes
from jaxvision.ops.losses import generalized_box_iou_loss, sigmoid_focal_loss
from jaxvision.ops.matching import BETWEEN_THRESHOLDS, match_anchors, match_atss
from jaxvision.ops.nms import select_detections

BOX_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))


@dataclasses.dataclass(frozen=True)
class RetinaNetOptions:
    """torchvision RetinaNet's defaults.

    Matching: IoU >= fg_iou_thresh is foreground, < bg_iou_thresh background, between ignored;
    each ground truth also keeps its best anchors (matcher "iou", torchvision's); or matcher
    "atss", jaxvision.ops.match_atss with atss_topk candidates per level. box_loss: "l1" on the
    BoxCoder codes (torchvision's retinanet_resnet50_fpn) or "giou", 1 - GIoU of the decoded
    boxes (its retinanet_resnet50_fpn_v2). Post-processing: per level, scores > score_thresh,
    the topk_candidates best; then class-aware NMS at nms_thresh and the
    detections_per_img best.

    class_softmax (not in torchvision; 0: off) adds, with this weight, a softmax cross-entropy
    over the foreground columns on the foreground anchors (per image / max(1, foreground)). The
    focal loss barely pushes a wrong class down once the anchor is foreground-like (at p = 0.3
    its term is ~0.02): this term teaches the classes apart. Scores stay the sigmoids.
    """

    matcher: str = "iou"
    fg_iou_thresh: float = 0.5
    bg_iou_thresh: float = 0.4
    atss_topk: int = 9
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_loss: str = "l1"
    class_softmax: float = 0.0
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 300
    topk_candidates: int = 1000

    def __post_init__(self):
        if self.box_loss not in ("l1", "giou"):
            raise UserError(f"--config.detection.box_loss={self.box_loss!r}: use 'l1' or 'giou'")
        if self.matcher not in ("iou", "atss"):
            raise UserError(f"--config.detection.matcher={self.matcher!r}: use 'iou' or 'atss'")


def _image_loss(logits, regression, anchors, boxes, classes, boxes_mask, options, levels):
    """One image: (classification, box regression) losses, each / max(1, foreground)."""
    iou = box_iou(boxes, anchors)
    if options.matcher == "atss":
        matched = match_atss(iou, boxes, anchors, boxes_mask, levels, options.atss_topk)
    else:
        matched = match_anchors(iou, boxes_mask, options.fg_iou_thresh, options.bg_iou_thresh, True)
    foreground = matched >= 0
    normaliser = jnp.maximum(1, jnp.sum(foreground)).astype(jnp.float32)
    gt = jnp.maximum(matched, 0)
    targets = jax.nn.one_hot(classes[gt], logits.shape[-1]) * foreground[:, None]
    focal = sigmoid_focal_loss(logits, targets, options.focal_alpha, options.focal_gamma)
    considered = (matched != BETWEEN_THRESHOLDS)[:, None]
    cls_loss = jnp.sum(jnp.where(considered, focal, 0)) / normaliser
    if options.class_softmax:
        # Column 0 (background) is never a ground truth's class: only 1.. compete.
        log_p = jax.nn.log_softmax(logits[:, 1:], axis=-1)
        picked = jnp.take_along_axis(log_p, jnp.maximum(classes[gt] - 1, 0)[:, None], axis=-1)[:, 0]
        softmax_loss = -jnp.sum(jnp.where(foreground, picked, 0)) / normaliser
        cls_loss = cls_loss + options.class_softmax * softmax_loss
    # Non-foreground anchors get themselves as target (code 0) so no log(0) reaches a gradient.
    target_boxes = jnp.where(foreground[:, None], boxes[gt], anchors)
    if options.box_loss == "giou":
        decoded = BOX_CODER.decode(regression, anchors)
        per_anchor = generalized_box_iou_loss(decoded, target_boxes)
    else:
        codes = BOX_CODER.encode(target_boxes, anchors)
        per_anchor = jnp.sum(jnp.abs(regression - codes), axis=-1)
    box_loss = jnp.sum(jnp.where(foreground, per_anchor, 0))
    return cls_loss, box_loss / normaliser


def loss(
    outputs: dict,
    anchors: jax.Array,
    boxes: jax.Array,
    classes: jax.Array,
    boxes_mask: jax.Array,
    options: RetinaNetOptions = RetinaNetOptions(),
    anchors_per_level: tuple[int, ...] | None = None,
) -> tuple[jax.Array, dict]:
    """torchvision RetinaNet.compute_loss on a padded batch.

    outputs: {"cls_logits": [B, A, K], "bbox_regression": [B, A, 4]}; anchors: [A, 4] xyxy;
    boxes: [B, M, 4] xyxy ground truth; classes: [B, M] int32 (column of cls_logits);
    boxes_mask: [B, M] bool (False: padding). Per image: the focal loss summed over the anchors
    not ignored and the box loss (options.box_loss) of the foreground anchors, each
    divided by max(1, number of foreground anchors); both averaged over the images. An image
    without boxes is all background. anchors_per_level (static) is what matcher "atss" needs.

    Returns (cls_loss + box_loss, {"cls_loss": scalar, "box_loss": scalar}), float32.
    """
    if options.matcher == "atss" and anchors_per_level is None:
        raise ValueError("matcher 'atss' needs anchors_per_level")
    anchors = jnp.asarray(anchors, jnp.float32)
    levels = tuple(anchors_per_level or ())
    per_image = jax.vmap(
        lambda lg, rg, bx, cl, mk: _image_loss(lg, rg, anchors, bx, cl, mk, options, levels)
    )
    cls_loss, box_loss = per_image(
        outputs["cls_logits"].astype(jnp.float32),
        outputs["bbox_regression"].astype(jnp.float32),
        jnp.asarray(boxes, jnp.float32),
        classes,
        jnp.asarray(boxes_mask, bool),
    )
    cls_loss, box_loss = jnp.mean(cls_loss), jnp.mean(box_loss)
    return cls_loss + box_loss, {"cls_loss": cls_loss, "box_loss": box_loss}


def _image_detections(logits, regression, anchors, image_size, num_anchors_per_level, options):
    num_classes = logits.shape[-1]
    cand_boxes, cand_scores, cand_classes, cand_valid = [], [], [], []
    start = 0
    for count in num_anchors_per_level:
        scores = jax.nn.sigmoid(logits[start : start + count]).reshape(-1)
        keep = scores > options.score_thresh
        k = min(options.topk_candidates, scores.shape[0])
        top_scores, top = jax.lax.top_k(jnp.where(keep, scores, -jnp.inf), k)
        anchor = start + top // num_classes
        boxes = BOX_CODER.decode(regression[anchor], anchors[anchor])
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
    num_anchors_per_level: tuple[int, ...],
    image_sizes: jax.Array,
    options: RetinaNetOptions = RetinaNetOptions(),
) -> dict:
    """torchvision RetinaNet.postprocess_detections on a batch.

    outputs: {"cls_logits": [B, A, K], "bbox_regression": [B, A, 4]}; anchors: [A, 4];
    num_anchors_per_level: static, summing to A (jaxvision.ops.anchors_per_level);
    image_sizes: [B, 2] int (h, w) the boxes are clipped to. Per level: sigmoid scores >
    score_thresh, the topk_candidates best (anchor, class) pairs, decoded and clipped; then
    class-aware NMS over all levels and the detections_per_img best.

    Returns {"boxes": [B, D, 4], "scores": [B, D], "classes": [B, D] int32, "valid": [B, D]
    bool}, D = detections_per_img, valid rows first by descending score, the rest zero.
    """
    if sum(num_anchors_per_level) != anchors.shape[0]:
        raise ValueError(
            f"num_anchors_per_level sums to {sum(num_anchors_per_level)}, but there are "
            f"{anchors.shape[0]} anchors"
        )
    anchors = jnp.asarray(anchors, jnp.float32)
    levels = tuple(num_anchors_per_level)
    per_image = jax.vmap(
        lambda lg, rg, size: _image_detections(lg, rg, anchors, size, levels, options)
    )
    return per_image(
        outputs["cls_logits"].astype(jnp.float32),
        outputs["bbox_regression"].astype(jnp.float32),
        jnp.asarray(image_sizes),
    )
