"""Detection networks by name: `build("retinanet_resnet50_fpn", num_classes=91)`.

A detector is a Flax module with `num_classes` (K, background included) and `dtype` (compute;
parameters stay float32), a class attribute `family` ("retinanet", "fcos", "ssd",
"fasterrcnn" or "yolo": which anchors, loss and post-processing apply) and

    __call__(images [B, H, W, 3] float normalised, train=False, features=False)
      -> {"cls_logits": float32 [B, A, K], "bbox_regression": float32 [B, A, 4]}

(one-stage detectors; FCOS adds "bbox_ctrness", Faster R-CNN's and YOLO's outputs are in
their entries below) with A in torchvision's head order (level by level, positions row-major,
then the anchors of one position); with `features=True` the list of maps the head reads,
finest first, whose shapes (`feature_shapes`) place the anchors. Anchor configuration: RetinaNet's
`anchor_sizes()`, `anchor_aspect_ratios()`, `num_anchors()`; SSD's fields `aspect_ratios`,
`scales`, `steps`, `clip`, `image_size` and `num_anchors()`. Both carry `image_mean` /
`image_std`, the normalisation torchvision's transform applies to [0, 1] pixels.

Names (an entry fixes the architecture and sets defaults that `build` options override):
- retinanet_resnet50_fpn: torchvision's (34,014,999 params at K=91 with norm="frozen").
- retinanet_resnet18_fpn, retinanet_resnet34_fpn: the same design on ResNet-18/34 bodies.
- retinanet_resnet18_fpn_small: for ~96-128 px CPU runs (synthetic shapes): ResNet-18 body at
  width 16, norm "batch", FPN 64 channels on P3-P5, 2 head convs, anchors from 16 px. At
  128x128: maps 16x16, 8x8, 4x4 (64 channels), A = 336 * 9 = 3,024.
- fcos_resnet50_fpn: torchvision's (32,269,600 params at K=91 with norm="frozen"); its head
  also returns "bbox_ctrness" [B, A, 1], one point (square anchor) per position.
- fcos_resnet18_fpn_small: for ~128 px CPU runs: ResNet-18 at width 16, norm "batch", FPN 64
  channels on P3-P5, 2 head convs, points of 8, 16, 32 px; at 128x128 A = 336.
- fasterrcnn_resnet50_fpn: torchvision's (41,755,286 params at K=91 with norm="frozen"), a
  two-stage detector: its `__call__(images, train, features, image_sizes, sample_rois)`
  returns RPN outputs, proposals, RoIs and the box head's outputs
  (jaxvision.models.detection.fasterrcnn).
- fasterrcnn_resnet18_fpn_small: for ~128 px CPU runs: ResNet-18 at width 16, norm "batch",
  FPN 64 channels on P2-P5 (+ pool), anchors from 16 px, 500 / 200 proposals (train / test),
  RoIs of 56 px pooled from P4, a 256-wide box head; at 128x128 A = 1,364 * 3 = 4,092.
- ssd300_vgg16: torchvision's (35,641,826 params at K=91).
- ssd128_vgg16_small: for 128 px CPU runs: VGG-16 at width 16 (16 ... 128 channels), fc6/fc7
  256, three stride-2 extras; at 128x128 maps 16, 8, 4, 2, 1 (128, 256, 128, 64, 64
  channels), boxes per position (4, 6, 6, 4, 4), A = 1,524.
- yolov8{n,s,m,l,x}, yolo11{n,s,m,l,x}, yolo26{n,s,m,l,x}: Ultralytics' YOLO networks
  (jaxvision.models.detection.yolo), anchor-free, one point per cell on P3-P5; num_classes K
  counts the background as everywhere here, so the head scores K - 1 classes (the reference's
  nc: COCO's 80 is num_classes=81), with no background channel. Images in [0, 1]
  (`image_mean` 0, `image_std` 1), sides multiples of 32. Outputs {"boxes": [B, A, 4 * reg_max]
  distance logits (reg_max 16; YOLO26: 1, the distances), "cls_logits": [B, A, K - 1]}, and
  for YOLO26 (end-to-end, no NMS) "one2one" with the same keys. Parameters at K=81 equal the
  reference's trainable count: yolov8n 3,157,184, yolo11n 2,624,064, yolo26n 2,572,280. For
  128 px CPU runs yolo11n / yolo26n as they are: maps 16, 8, 4, A = 336.
"""

import operator
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvision.errors import UserError
from jaxvision.models.detection.freezing import DEFAULT_TRAINABLE_LAYERS, frozen_backbone_layers
from jaxvision.registry import ModelRegistry

_RETINANET_SMALL = {
    "width": 16,
    "norm": "batch",
    "fpn_channels": 64,
    "max_level": 5,
    "head_convs": 2,
    "anchor_size": 16,
}
_FCOS_SMALL = {
    "width": 16,
    "norm": "batch",
    "fpn_channels": 64,
    "max_level": 5,
    "head_convs": 2,
}
_SSD_SMALL = {
    "width": 16,
    "fc_channels": 256,
    "extra_blocks": ((64, 128, 2, 1), (32, 64, 2, 1), (32, 64, 2, 1)),
    "image_size": 128,
    "aspect_ratios": ((2,), (2, 3), (2, 3), (2,), (2,)),
    "scales": (0.1, 0.2, 0.37, 0.54, 0.71, 0.88),
    "steps": (8, 16, 32, 64, 128),
}

_FASTERRCNN_SMALL = {
    "width": 16,
    "norm": "batch",
    "fpn_channels": 64,
    "anchor_size": 16,
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_train": 500,
    "rpn_post_nms_top_n_test": 200,
    "roi_canonical_scale": 56,
    "representation_size": 256,
}

# name -> a module class or a functools.partial fixing its architecture, imported on first use;
# `defaults`: the options the entry sets (a small preset), which `build` options override.
DETECTORS = ModelRegistry("detector")
# The YOLO reference's scales (its YAML files): [depth, width, max_channels]; YOLO11 and YOLO26
# use C3k blocks from m up. Entry defaults, so a caller may still pass a smaller depth or width.
_YOLOV8_SCALES = {
    "n": (0.33, 0.25, 1024),
    "s": (0.33, 0.50, 1024),
    "m": (0.67, 0.75, 768),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.25, 512),
}
_YOLO11_SCALES = {
    "n": (0.50, 0.25, 1024),
    "s": (0.50, 0.50, 1024),
    "m": (0.50, 1.00, 512),
    "l": (1.00, 1.00, 512),
    "x": (1.00, 1.50, 512),
}


def _yolo_scale(scales: dict, scale: str, c3k_from_m: bool) -> dict:
    depth, width, max_channels = scales[scale]
    c3k = c3k_from_m and scale in "mlx"
    return {"depth": depth, "width": width, "max_channels": max_channels, "c3k": c3k}


for _name, _target, _defaults in (
    ("fcos_resnet18_fpn_small", "fcos:FCOSResNet18", _FCOS_SMALL),
    ("fcos_resnet50_fpn", "fcos:FCOSResNet50", {}),
    ("fasterrcnn_resnet18_fpn_small", "fasterrcnn:FasterRCNNResNet18", _FASTERRCNN_SMALL),
    ("fasterrcnn_resnet50_fpn", "fasterrcnn:FasterRCNNResNet50", {}),
    ("retinanet_resnet18_fpn", "retinanet:RetinaNetResNet18", {}),
    ("retinanet_resnet18_fpn_small", "retinanet:RetinaNetResNet18", _RETINANET_SMALL),
    ("retinanet_resnet34_fpn", "retinanet:RetinaNetResNet34", {}),
    ("retinanet_resnet50_fpn", "retinanet:RetinaNetResNet50", {}),
    ("ssd128_vgg16_small", "ssd:SSD", _SSD_SMALL),
    ("ssd300_vgg16", "ssd:SSD", {}),
    *((f"yolov8{s}", "yolo:YOLOv8", _yolo_scale(_YOLOV8_SCALES, s, False)) for s in "nsmlx"),
    *((f"yolo11{s}", "yolo:YOLO11", _yolo_scale(_YOLO11_SCALES, s, True)) for s in "nsmlx"),
    *((f"yolo26{s}", "yolo:YOLO26", _yolo_scale(_YOLO11_SCALES, s, True)) for s in "nsmlx"),
):
    DETECTORS.declare(_name, f"jaxvision.models.detection.{_target}", defaults=_defaults)


def names() -> list[str]:
    """All detector names, sorted."""
    return DETECTORS.names()


def options(name: str) -> list[str]:
    """Keyword options `build(name, ...)` accepts besides `num_classes` and `dtype`, sorted."""
    return DETECTORS.options(name)


def defaults(name: str) -> dict[str, Any]:
    """The options the entry sets beyond the module's own defaults (e.g. the small presets')."""
    return DETECTORS.defaults(name)


def family(name: str) -> str:
    """ "retinanet", "fcos", "ssd", "fasterrcnn" or "yolo": which anchors, loss and
    post-processing `name` uses."""
    return DETECTORS.module_class(name).family


def class_outputs(name: str) -> tuple[str, ...]:
    """Path prefixes (under `params`) of the parameters whose shape follows num_classes: what a
    new head replaces ("head/classification_head/cls_logits" for RetinaNet, whose conv tower
    is class-agnostic; all of "head/classification_head" for SSD; every module of YOLO's class
    towers, whose width follows the number of classes above the P3 width)."""
    return DETECTORS.module_class(name).class_outputs


def build(name: str, *, num_classes: int, dtype: Any = jnp.float32, **kwargs: Any) -> nn.Module:
    """The detector `name` (unbound) with compute `dtype`; parameters are float32.

    `model.apply(variables, images, train)` (with `mutable=["batch_stats"]` when training a
    norm="batch" RetinaNet) returns the head outputs (see the module docstring). num_classes
    counts the background (COCO: 91). Raises UserError for an unknown name, num_classes < 2 or
    an option the model lacks.
    """
    DETECTORS.module_class(name)  # an unknown name fails first
    if not hasattr(num_classes, "__index__") or operator.index(num_classes) < 2:
        raise UserError(
            f"detector {name!r}: num_classes counts the background and must be an int >= 2, "
            f"got {num_classes!r}"
        )
    return DETECTORS.create(name, num_classes=operator.index(num_classes), dtype=dtype, **kwargs)


def feature_shapes(model: nn.Module, height: int, width: int) -> tuple[tuple[int, int], ...]:
    """(h, w) of each map the head reads, finest first, for [B, height, width, 3] inputs:
    what places the anchors. Traced abstractly (nothing is compiled or allocated)."""
    images = jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32)
    maps = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.key(0), x, features=True)[0], images
    )
    return tuple(tuple(m.shape[1:3]) for m in maps)


def frozen_backbone(model: nn.Module, trainable_layers: int | None = None) -> Callable:
    """The `frozen` predicate (for `train.optim.make_optimizer`) of torchvision's
    `trainable_backbone_layers` for `model`'s family; None takes torchvision's default
    (RetinaNet 3, SSD 4). Only for a pretrained backbone: torchvision trains all layers of a
    detector started from scratch."""
    if trainable_layers is None:
        trainable_layers = DEFAULT_TRAINABLE_LAYERS[model.family]
    return frozen_backbone_layers(model.family, trainable_layers)


__all__ = [
    "DEFAULT_TRAINABLE_LAYERS",
    "DETECTORS",
    "build",
    "class_outputs",
    "defaults",
    "family",
    "feature_shapes",
    "frozen_backbone",
    "frozen_backbone_layers",
    "names",
    "options",
]
