"""torchvision's `trainable_backbone_layers` as a `frozen` predicate for `make_optimizer`.

torchvision freezes the first backbone layers of a detector started from pretrained weights
(and trains everything when it starts from scratch, which the caller decides):
- RetinaNet, FCOS and Faster R-CNN: of conv1, layer1 ... layer4, the last `trainable_layers`
  train (5 adds bn1);
  default 3 freezes conv1, bn1 and layer1.
- SSD: of VGG-16's 5 stages (conv1_x ... conv5_x), the last `trainable_layers` train; default
  4 freezes conv1_x; 0 freezes all five. fc6/fc7, the extras and the conv4_3 scale are new
  layers and always train.
- YOLO: everything trains, as the reference's default (its `freeze` is off); 5, the
  default, is the only value.
FPN and heads always train. Frozen BatchNorm tensors are not parameters at all.
"""

import re
from collections.abc import Callable

from jaxvision.errors import UserError

DEFAULT_TRAINABLE_LAYERS = {"retinanet": 3, "fcos": 3, "fasterrcnn": 3, "ssd": 4, "yolo": 5}
# The families whose backbone is a ResNet body
_RESNET_FAMILIES = ("retinanet", "fcos", "fasterrcnn")

_RESNET_LAYERS = ("layer4", "layer3", "layer2", "layer1", "conv1")
# Where each VGG-16 stage starts in torch's `vgg16().features` numbering: index 0, then each
# max pool but the last, as torchvision's `_vgg_extractor` counts them.
_VGG_STAGE_STARTS = (0, 4, 9, 16, 23)
_VGG_FEATURES = 31  # len(vgg16().features)


def _vgg_index(module: str) -> int | None:
    """Our SSD backbone module → its index in torch's vgg16().features (None: not VGG's).

    `features_i` is index i; `extra_0_k` (pool4 and conv5_x, k < 7) is 23 + k."""
    if m := re.fullmatch(r"features_(\d+)", module):
        return int(m.group(1))
    if m := re.fullmatch(r"extra_0_([0-6])", module):
        return 23 + int(m.group(1))
    return None


def frozen_backbone_layers(family: str, trainable_layers: int) -> Callable[[str], bool]:
    """path ("backbone/layer1_0/conv1/kernel", "fpn/p6/bias", ...) → frozen?, freezing what
    torchvision's `trainable_backbone_layers=trainable_layers` (0..5) freezes for the detector
    `family` (the model's `family`: "retinanet", "fcos", "fasterrcnn", "ssd" or "yolo")."""
    if family not in DEFAULT_TRAINABLE_LAYERS:
        raise UserError(
            f"unknown detector family {family!r}: choose one of "
            f"{', '.join(sorted(DEFAULT_TRAINABLE_LAYERS))}"
        )
    if not 0 <= trainable_layers <= 5:
        raise UserError(f"trainable_backbone_layers is 0..5, got {trainable_layers}")
    if family == "yolo":
        if trainable_layers != 5:
            raise UserError(
                f"trainable_backbone_layers={trainable_layers}: YOLO trains all its layers, "
                "as the reference does; leave it at its default"
            )
        return lambda path: False

    if family in _RESNET_FAMILIES:
        trained = set(_RESNET_LAYERS[:trainable_layers]) | (
            {"bn1"} if trainable_layers == 5 else set()
        )

        def frozen(path: str) -> bool:
            parts = path.split("/")
            return parts[0] == "backbone" and parts[1].split("_")[0] not in trained

        return frozen

    stages = len(_VGG_STAGE_STARTS)
    freeze_before = (
        _VGG_FEATURES if trainable_layers == 0 else _VGG_STAGE_STARTS[stages - trainable_layers]
    )

    def frozen(path: str) -> bool:
        parts = path.split("/")
        index = _vgg_index(parts[1]) if parts[0] == "backbone" and len(parts) > 2 else None
        return index is not None and index < freeze_before

    return frozen
