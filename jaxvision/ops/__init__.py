"""Detection math on fixed shapes (jittable, batched), matching torchvision's semantics:
boxes and box coding, NMS, anchor matching, losses; anchors and default boxes on the host."""

from jaxvision.ops.anchors import (
    anchor_grid,
    anchors_per_level,
    default_boxes,
    retinanet_anchor_sizes,
)
from jaxvision.ops.boxes import (
    BoxCoder,
    box_area,
    box_convert,
    box_iou,
    clip_boxes,
    generalized_box_iou,
    remove_small_boxes_mask,
)
from jaxvision.ops.losses import generalized_box_iou_loss, l1, sigmoid_focal_loss, smooth_l1
from jaxvision.ops.matching import (
    BELOW_LOW_THRESHOLD,
    BETWEEN_THRESHOLDS,
    match_anchors,
    match_anchors_ssd,
    match_atss,
)
from jaxvision.ops.nms import batched_nms, nms, select_detections

__all__ = [
    "BELOW_LOW_THRESHOLD",
    "BETWEEN_THRESHOLDS",
    "BoxCoder",
    "anchor_grid",
    "anchors_per_level",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes",
    "default_boxes",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "l1",
    "match_anchors",
    "match_anchors_ssd",
    "match_atss",
    "nms",
    "retinanet_anchor_sizes",
    "select_detections",
    "sigmoid_focal_loss",
    "remove_small_boxes_mask",
    "smooth_l1",
]
