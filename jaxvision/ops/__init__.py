"""Detection math on fixed shapes (jittable, batched), matching torchvision's semantics:
boxes and box coding, NMS, anchor matching, sampling, losses, RoIAlign; anchors and default
boxes on the host."""

from jaxvision.ops.anchors import (
    anchor_grid,
    anchor_points,
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
    complete_box_iou,
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
from jaxvision.ops.roi_align import map_scales, multiscale_roi_align, roi_align, roi_levels
from jaxvision.ops.sampling import balanced_sample, compact
from jaxvision.ops.task_aligned import AlignedTargets, task_aligned_assign

__all__ = [
    "AlignedTargets",
    "balanced_sample",
    "compact",
    "BELOW_LOW_THRESHOLD",
    "BETWEEN_THRESHOLDS",
    "BoxCoder",
    "anchor_grid",
    "anchor_points",
    "anchors_per_level",
    "batched_nms",
    "box_area",
    "box_convert",
    "box_iou",
    "clip_boxes",
    "complete_box_iou",
    "default_boxes",
    "generalized_box_iou",
    "generalized_box_iou_loss",
    "l1",
    "map_scales",
    "match_anchors",
    "match_anchors_ssd",
    "match_atss",
    "multiscale_roi_align",
    "nms",
    "retinanet_anchor_sizes",
    "roi_align",
    "roi_levels",
    "select_detections",
    "sigmoid_focal_loss",
    "remove_small_boxes_mask",
    "smooth_l1",
    "task_aligned_assign",
]
