"""Faster R-CNN's training targets, losses and post-processing (Ren et al. 2015), as
torchvision's RegionProposalNetwork and RoIHeads compute them, on fixed shapes with masks.

The detector (jaxvision.models.detection.fasterrcnn) proposes regions itself; in training it
calls `sample_rois` on its proposals (this module's, with the ground truth and a key bound)
before the box head runs. Its outputs: "objectness" [B, A] and "rpn_box_regression" [B, A, 4]
over the anchors [A, 4] (jaxvision.ops.anchor_grid, torchvision's order); "rois" [B, R, 4]
with "rois_valid" [B, R]; "class_logits" [B, R, K] and "box_regression" [B, R, 4K]; in
training also the RoI targets `sample_rois` made ("roi_labels" [B, R], "roi_targets"
[B, R, 4]).

Both losses are means over the whole batch, as torchvision's (it concatenates the images'
samples): the RPN's over its sampled anchors, the box head's over its sampled RoIs. The
samples are random (jaxvision.ops.sampling), so only their distribution is torchvision's.
All functions are pure and jittable; `options` is static.
"""

import dataclasses

import jax
import jax.numpy as jnp

from jaxvision.ops.boxes import BoxCoder, box_iou, clip_boxes, remove_small_boxes_mask
from jaxvision.ops.losses import smooth_l1
from jaxvision.ops.matching import BELOW_LOW_THRESHOLD, BETWEEN_THRESHOLDS, match_anchors
from jaxvision.ops.nms import select_detections
from jaxvision.ops.sampling import balanced_sample, compact

RPN_CODER = BoxCoder(weights=(1.0, 1.0, 1.0, 1.0))
ROI_CODER = BoxCoder(weights=(10.0, 10.0, 5.0, 5.0))
# torchvision's smooth L1 beta for both stages' box losses
BOX_BETA = 1 / 9


@dataclasses.dataclass(frozen=True)
class FasterRCNNOptions:
    """torchvision FasterRCNN's training and post-processing defaults (its proposal counts and
    NMS are the model's: they decide what the box head sees).

    RPN: anchors with IoU >= rpn_fg_iou_thresh are foreground (and each ground truth's best
    anchors), < rpn_bg_iou_thresh background; rpn_batch_size_per_image sampled per image,
    at most rpn_positive_fraction of them foreground. RoI heads: the proposals plus the ground
    truth, IoU >= box_fg_iou_thresh foreground, < box_bg_iou_thresh background;
    box_batch_size_per_image sampled, box_positive_fraction foreground at most.
    Post-processing: per class, scores > score_thresh, NMS at nms_thresh, the
    detections_per_img best.
    """

    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    score_thresh: float = 0.05
    nms_thresh: float = 0.5
    detections_per_img: int = 100


def rpn_targets(anchors, boxes, boxes_mask, options: FasterRCNNOptions):
    """One image's anchor labels: (foreground [A] bool, background [A] bool, regression targets
    [A, 4]: RPN codes of each anchor's matched ground truth, 0 where not foreground)."""
    iou = box_iou(boxes, anchors)
    matched = match_anchors(
        iou, boxes_mask, options.rpn_fg_iou_thresh, options.rpn_bg_iou_thresh, True
    )
    foreground = matched >= 0
    target_boxes = jnp.where(foreground[:, None], boxes[jnp.maximum(matched, 0)], anchors)
    return foreground, matched == BELOW_LOW_THRESHOLD, RPN_CODER.encode(target_boxes, anchors)


def rpn_loss(
    objectness, box_regression, anchors, boxes, boxes_mask, key, options: FasterRCNNOptions
):
    """torchvision RegionProposalNetwork's losses on a padded batch.

    objectness: [B, A] logits; box_regression: [B, A, 4]; anchors: [A, 4]; boxes: [B, M, 4]
    ground truth with boxes_mask [B, M]; key: the sampling key. Per image
    rpn_batch_size_per_image anchors are sampled (rpn_targets' labels); the objectness loss is
    the binary cross-entropy averaged over all sampled anchors of the batch, the box loss the
    smooth L1 (beta 1/9) summed over the sampled foreground anchors / the number sampled.

    Returns (objectness loss, box loss), float32 scalars.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    fg, bg, targets = jax.vmap(lambda b, m: rpn_targets(anchors, b, m, options))(boxes, boxes_mask)
    keys = jax.random.split(key, boxes.shape[0])
    sample = jax.vmap(
        lambda k, p, n: balanced_sample(
            k, p, n, options.rpn_batch_size_per_image, options.rpn_positive_fraction
        )
    )
    pos, neg = sample(keys, fg, bg)
    sampled = pos | neg
    count = jnp.maximum(jnp.sum(sampled), 1).astype(jnp.float32)
    logits = objectness.astype(jnp.float32)
    # torch's binary_cross_entropy_with_logits
    bce = (1 - fg) * logits - jax.nn.log_sigmoid(logits)
    objectness_loss = jnp.sum(jnp.where(sampled, bce, 0)) / count
    per_anchor = jnp.sum(smooth_l1(box_regression.astype(jnp.float32), targets, BOX_BETA), -1)
    box_loss = jnp.sum(jnp.where(pos, per_anchor, 0)) / count
    return objectness_loss, box_loss


def sample_rois(proposals, proposals_valid, boxes, classes, boxes_mask, key, options):
    """torchvision RoIHeads.select_training_samples on a padded batch.

    proposals: [B, P, 4] with proposals_valid [B, P]; boxes [B, M, 4], classes [B, M] (1..K-1)
    and boxes_mask [B, M]: the ground truth, appended to the proposals. Each candidate takes
    its best ground truth's class where IoU >= box_fg_iou_thresh, background (0) below
    box_bg_iou_thresh (between: ignored); box_batch_size_per_image are sampled per image,
    kept in candidate order as torchvision does.

    Returns (rois [B, R, 4], rois_valid [B, R], {"roi_labels": [B, R] int32, "roi_targets":
    [B, R, 4] ROI_CODER codes of the matched ground truth}), R = box_batch_size_per_image.
    """
    size = options.box_batch_size_per_image

    def image(key, proposals, proposals_valid, boxes, classes, boxes_mask):
        candidates = jnp.concatenate([proposals, boxes.astype(proposals.dtype)])
        valid = jnp.concatenate([proposals_valid, boxes_mask])
        iou = box_iou(boxes, candidates)
        matched = match_anchors(
            iou, boxes_mask, options.box_fg_iou_thresh, options.box_bg_iou_thresh, False
        )
        matched = jnp.where(valid, matched, BETWEEN_THRESHOLDS)
        pos, neg = balanced_sample(
            key, matched >= 0, matched == BELOW_LOW_THRESHOLD, size, options.box_positive_fraction
        )
        index, rois_valid = compact(pos | neg, size)
        rois = jnp.where(rois_valid[:, None], candidates[index], 0)
        gt = jnp.maximum(matched[index], 0)
        positive = rois_valid & (matched[index] >= 0)
        labels = jnp.where(positive, classes[gt], 0).astype(jnp.int32)
        # Non-positive RoIs get themselves as target (code 0) and padding a unit box, so no
        # log(0) is ever taken.
        safe_rois = jnp.where(rois_valid[:, None], rois, jnp.array([0.0, 0.0, 1.0, 1.0]))
        target_boxes = jnp.where(positive[:, None], boxes[gt], safe_rois)
        targets = ROI_CODER.encode(target_boxes, safe_rois)
        return rois, rois_valid, {"roi_labels": labels, "roi_targets": targets}

    keys = jax.random.split(key, proposals.shape[0])
    return jax.vmap(image)(keys, proposals, proposals_valid, boxes, classes, boxes_mask)


def box_loss(class_logits, box_regression, labels, targets, rois_valid):
    """torchvision's fastrcnn_loss on padded RoIs: cross-entropy averaged over the valid RoIs
    of the batch; smooth L1 (beta 1/9) of the ground-truth class's regression on the
    foreground RoIs, summed / the number of valid RoIs. class_logits: [B, R, K];
    box_regression: [B, R, 4K]; labels: [B, R] int; targets: [B, R, 4]; rois_valid: [B, R].
    Returns (classification loss, box loss)."""
    logits = class_logits.astype(jnp.float32)
    count = jnp.maximum(jnp.sum(rois_valid), 1).astype(jnp.float32)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(log_p, labels[..., None], axis=-1)[..., 0]
    classification = -jnp.sum(jnp.where(rois_valid, picked, 0)) / count
    b, r, k = logits.shape
    per_class = box_regression.astype(jnp.float32).reshape(b, r, k, 4)
    chosen = jnp.take_along_axis(per_class, labels[..., None, None], axis=2)[:, :, 0]
    per_roi = jnp.sum(smooth_l1(chosen, targets, BOX_BETA), axis=-1)
    positive = rois_valid & (labels > 0)
    return classification, jnp.sum(jnp.where(positive, per_roi, 0)) / count


def loss(
    outputs, anchors, boxes, boxes_mask, key, options: FasterRCNNOptions = FasterRCNNOptions()
):
    """Faster R-CNN's four losses, summed (torchvision weighs them equally).

    outputs: the detector's training outputs (the module docstring); anchors: [A, 4]; boxes
    [B, M, 4] with boxes_mask [B, M]; key: the RPN's sampling key (the RoI sample was drawn
    inside the model). Returns (total, {"rpn_objectness", "rpn_box", "roi_cls", "roi_box"}).
    """
    objectness, rpn_box = rpn_loss(
        outputs["objectness"],
        outputs["rpn_box_regression"],
        anchors,
        jnp.asarray(boxes, jnp.float32),
        jnp.asarray(boxes_mask, bool),
        key,
        options,
    )
    roi_cls, roi_box = box_loss(
        outputs["class_logits"],
        outputs["box_regression"],
        outputs["roi_labels"],
        outputs["roi_targets"],
        outputs["rois_valid"],
    )
    parts = {
        "rpn_objectness": objectness,
        "rpn_box": rpn_box,
        "roi_cls": roi_cls,
        "roi_box": roi_box,
    }
    return objectness + rpn_box + roi_cls + roi_box, parts


def _image_detections(logits, regression, rois, rois_valid, image_size, options):
    r, k = logits.shape
    scores = jax.nn.softmax(logits, axis=-1)[:, 1:]
    boxes = ROI_CODER.decode(regression.reshape(r, k, 4), rois[:, None, :])
    boxes = clip_boxes(boxes, image_size)[:, 1:].reshape(-1, 4)
    scores = scores.reshape(-1)
    classes = jnp.broadcast_to(jnp.arange(1, k, dtype=jnp.int32), (r, k - 1)).reshape(-1)
    valid = jnp.repeat(rois_valid, k - 1) & (scores > options.score_thresh)
    valid &= remove_small_boxes_mask(boxes, 1e-2)
    return select_detections(
        boxes, scores, classes, valid, options.nms_thresh, options.detections_per_img
    )


def postprocess(outputs: dict, image_sizes, options: FasterRCNNOptions = FasterRCNNOptions()):
    """torchvision RoIHeads.postprocess_detections on a batch.

    outputs: {"class_logits": [B, R, K], "box_regression": [B, R, 4K], "rois": [B, R, 4],
    "rois_valid": [B, R]}; image_sizes: [B, 2] (h, w) the boxes are clipped to. Softmax
    scores; each RoI decoded per class (ROI_CODER) and clipped; background dropped; scores >
    score_thresh, sides >= 0.01; class-aware NMS; the detections_per_img best.

    Returns {"boxes": [B, D, 4], "scores": [B, D], "classes": [B, D] int32, "valid": [B, D]},
    valid rows first by descending score, the rest zero.
    """
    per_image = jax.vmap(
        lambda lg, rg, ro, rv, size: _image_detections(lg, rg, ro, rv, size, options)
    )
    return per_image(
        outputs["class_logits"].astype(jnp.float32),
        outputs["box_regression"].astype(jnp.float32),
        outputs["rois"].astype(jnp.float32),
        outputs["rois_valid"],
        jnp.asarray(image_sizes),
    )
