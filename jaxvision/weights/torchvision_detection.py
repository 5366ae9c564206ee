"""torchvision detection state dicts <-> jaxvision detectors (RetinaNet, FCOS, SSD, Faster
R-CNN).

Module paths map by rule (jaxvision.models.detection names its modules after torch's):

  RetinaNet  backbone.body.layer2.0.downsample.0  ↔ backbone/layer2_0/downsample_conv
             backbone.fpn.inner_blocks.1.0        ↔ fpn/inner_blocks_1  (layer_blocks alike)
             backbone.fpn.extra_blocks.p6         ↔ fpn/p6
             head.classification_head.conv.2.0    ↔ head/classification_head/conv_2
             head.classification_head.conv.2.1    ↔ head/classification_head/conv_2_norm
             head.regression_head.bbox_reg        ↔ head/regression_head/bbox_reg
  FCOS       backbone.* as RetinaNet; the towers are one nn.Sequential (conv, GroupNorm, ReLU):
             head.classification_head.conv.3      ↔ head/classification_head/conv_1
             head.regression_head.conv.4          ↔ head/regression_head/conv_1_norm
             head.regression_head.bbox_ctrness    ↔ head/regression_head/bbox_ctrness
  Faster     backbone.* as RetinaNet (no extra blocks: its pool level has no tensors)
  R-CNN      rpn.head.conv.0.0 / cls_logits        ↔ rpn_head/conv / cls_logits
             roi_heads.box_head.fc6               ↔ box_head/fc6 (input axis (C, 7, 7) ↔ (7, 7, C))
             roi_heads.box_predictor.cls_score    ↔ box_predictor/cls_score
  SSD        backbone.features.21 / extra.0.7.1   ↔ backbone/features_21 / extra_0_7_1
             backbone.scale_weight                ↔ params/backbone/scale_weight
             head.classification_head.module_list.3 ↔ head/classification_head/module_list_3

Pre-0.8 torchvision names (`head.*.conv.{2i}`, `backbone.fpn.inner_blocks.i.weight`, what
torch.load of the original COCO RetinaNet .pth gives) are read too. BatchNorm tensors go where
the model keeps them: params scale/bias + batch_stats mean/var (norm="batch"), or all four in
batch_stats (norm="frozen"); the file is the same either way, and export writes
`num_batches_tracked` only for trainable BatchNorm, as torchvision's state dicts have it.

`import_weights` also takes a torchvision classification file (resnet50's `conv1.weight`,
`layer1.0...`, `fc.*`; vgg16's `features.N.*`, `classifier.*`): the backbone is imported, the
classifier dropped, and the rest (FPN, heads; for SSD also fc6/fc7, the extras and the conv4_3
scale, which torchvision creates fresh too) kept from the fresh variables.
"""

import math
import re
from collections import defaultdict

import numpy as np

from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.weights import torchvision as classification
from jaxvision.weights.common import (
    check_complete,
    conv_to_flax,
    flatten,
    param_to_torch,
    unflatten,
)

_BN = {
    "weight": "scale",
    "bias": "bias",
    "running_mean": "mean",
    "running_var": "var",
}
_BN_TO_TORCH = {v: k for k, v in _BN.items()}
_HEADS = "(classification_head|regression_head)"
# jaxvision's detail paths (model_kwargs c2_detail, bottom_up): no torchvision module has them,
# so they keep their own names
_DETAIL_PATHS = re.compile(r"c2_detail|bottom_up_\d+")
_RETINANET_RULES = (
    (
        r"backbone\.body\.(.+)",
        lambda m: ("backbone", *classification._module_to_flax("resnet", m[1])),
    ),
    (
        r"backbone\.fpn\.(inner_blocks|layer_blocks)\.(\d+)(\.0)?",
        lambda m: ("fpn", f"{m[1]}_{m[2]}"),
    ),
    (r"backbone\.fpn\.extra_blocks\.(p6|p7)", lambda m: ("fpn", m[1])),
    (rf"head\.{_HEADS}\.conv\.(\d+)\.0", lambda m: ("head", m[1], f"conv_{m[2]}")),
    # GroupNorm after a tower conv (head_norm="group", torchvision's v2 head)
    (rf"head\.{_HEADS}\.conv\.(\d+)\.1", lambda m: ("head", m[1], f"conv_{m[2]}_norm")),
    # Before torchvision 0.8 the tower was one nn.Sequential of conv, ReLU, conv, ...
    (rf"head\.{_HEADS}\.conv\.(\d*[02468])", lambda m: ("head", m[1], f"conv_{int(m[2]) // 2}")),
    (r"head\.(classification_head)\.(cls_logits)", lambda m: ("head", m[1], m[2])),
    (r"head\.(regression_head)\.(bbox_reg)", lambda m: ("head", m[1], m[2])),
    (rf"({_DETAIL_PATHS.pattern})", lambda m: (m[1],)),
)


def _fcos_tower(module: str, head: str, index: int) -> tuple[str, ...]:
    """FCOS's tower is one nn.Sequential of (conv, GroupNorm, ReLU) x 4: conv.3i is our conv_i,
    conv.3i+1 its GroupNorm conv_i_norm; the ReLUs have no tensors."""
    if index % 3 == 2:
        raise UserError(f"unexpected module {module} in a torchvision FCOS file (a ReLU)")
    return ("head", head, f"conv_{index // 3}" + ("_norm" if index % 3 else ""))


_FCOS_RULES = (
    *_RETINANET_RULES[:3],  # backbone.body, the FPN and its extra blocks
    (rf"head\.{_HEADS}\.conv\.(\d+)", lambda m: _fcos_tower(m[0], m[1], int(m[2]))),
    (r"head\.(classification_head)\.(cls_logits)", lambda m: ("head", m[1], m[2])),
    (r"head\.(regression_head)\.(bbox_reg|bbox_ctrness)", lambda m: ("head", m[1], m[2])),
)
_FASTERRCNN_RULES = (
    *_RETINANET_RULES[:2],  # backbone.body and the FPN (its pool level has no tensors)
    # torchvision >= 0.13 wraps the RPN conv in Conv2dNormActivation (conv.0.0)
    (r"rpn\.head\.conv(\.0\.0)?", lambda m: ("rpn_head", "conv")),
    (r"rpn\.head\.(cls_logits|bbox_pred)", lambda m: ("rpn_head", m[1])),
    (r"roi_heads\.box_head\.(fc6|fc7)", lambda m: ("box_head", m[1])),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)", lambda m: ("box_predictor", m[1])),
)
_RULES = {"retinanet": _RETINANET_RULES, "fcos": _FCOS_RULES, "fasterrcnn": _FASTERRCNN_RULES}
_FAMILY_NAMES = {"retinanet": "RetinaNet", "fcos": "FCOS", "fasterrcnn": "Faster R-CNN"}
# The families whose backbone is a ResNet body (backbone.body.*) under an FPN.
_RESNET_FPN = ("retinanet", "fcos", "fasterrcnn")
_CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def _family(model_name: str) -> str:
    if model_name not in detection.names():
        raise UserError(f"no torchvision detection converter for model '{model_name}'")
    return detection.family(model_name)


def _module_to_flax(family: str, module: str) -> tuple[str, ...]:
    if family == "ssd":
        return tuple(classification._join_indices(module.split(".")))
    for pattern, path in _RULES[family]:
        if m := re.fullmatch(pattern, module):
            return path(m)
    raise UserError(f"unexpected module {module} in a torchvision {_FAMILY_NAMES[family]} file")


def _module_to_torch(family: str, path: tuple[str, ...]) -> str:
    if family == "ssd":
        return ".".join(re.sub(r"_(\d+)", r".\1", p) for p in path)
    top, *rest = path
    if _DETAIL_PATHS.fullmatch(top):
        return top
    if top == "backbone":
        return "backbone.body." + classification._module_to_torch("resnet", tuple(rest))
    if top == "fpn":
        name = rest[0]
        if name in ("p6", "p7"):
            return f"backbone.fpn.extra_blocks.{name}"
        return "backbone.fpn." + re.sub(r"_(\d+)$", r".\1.0", name)
    if top == "rpn_head":
        return "rpn.head.conv.0.0" if rest == ["conv"] else f"rpn.head.{rest[0]}"
    if top in ("box_head", "box_predictor"):
        return f"roi_heads.{top}.{rest[0]}"
    head, name = rest
    if family == "fcos" and (m := re.fullmatch(r"conv_(\d+)(_norm)?", name)):
        return f"head.{head}.conv.{3 * int(m[1]) + bool(m[2])}"
    name = re.sub(r"^conv_(\d+)_norm$", r"conv.\1.1", name)
    return f"head.{head}." + re.sub(r"^conv_(\d+)$", r"conv.\1.0", name)


def _classification_to_detection(family: str, name: str) -> str | None:
    """A torchvision classifier's tensor name → the detector's (None: not in the detector)."""
    if name.startswith(_CLASSIFIER_PREFIXES):
        return None
    if family in _RESNET_FPN:
        return f"backbone.body.{name}"
    m = re.fullmatch(r"features\.(\d+)\.(\w+)", name)
    index = int(m[1]) if m else -1
    if 0 <= index < 23:
        return f"backbone.features.{name[len('features.') :]}"
    if 23 < index < 30:  # pool4 and conv5_x start torch's extra.0
        return f"backbone.extra.0.{index - 23}.{m[2]}"
    raise UserError(
        f"unexpected tensor {name} for an SSD VGG-16 backbone: give a torchvision vgg16 (no "
        "BatchNorm) classification file or an ssd300_vgg16 detection file"
    )


def is_classification_file(tensors: dict) -> bool:
    """True for a torchvision classifier's state dict (no `backbone.` / `head.` names)."""
    return not any(k.startswith(("backbone.", "head.")) for k in tensors)


def to_flax(model_name: str, tensors: dict[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """torchvision detection (or classification) state dict → flat {(collection, *path, leaf):
    array} with BatchNorm as params scale/bias + batch_stats mean/var (`adapt` moves them for
    norm="frozen"); a classification file gives the backbone only."""
    family = _family(model_name)
    if is_classification_file(tensors):
        renamed = {}
        for name, value in tensors.items():
            new = _classification_to_detection(family, name)
            if new is not None:
                renamed[new] = value
        tensors = renamed
    modules: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for name, value in tensors.items():
        module, _, leaf = name.rpartition(".")
        modules[module][leaf] = np.asarray(value)

    flat = {}
    for module, leaves in modules.items():
        path = _module_to_flax(family, module)
        leaves.pop("num_batches_tracked", None)
        if "running_mean" in leaves:
            for leaf, value in leaves.items():
                if leaf not in _BN:
                    raise UserError(f"unexpected BatchNorm tensor {module}.{leaf} in the file")
                collection = "batch_stats" if leaf.startswith("running_") else "params"
                flat[(collection, *path, _BN[leaf])] = value
            continue
        for leaf, value in leaves.items():
            if leaf == "scale_weight" and module == "backbone":  # SSD's conv4_3 L2 scale
                flat[("params", "backbone", "scale_weight")] = value
            elif leaf == "bias":
                flat[("params", *path, "bias")] = value
            elif leaf == "weight" and value.ndim == 4:
                flat[("params", *path, "kernel")] = conv_to_flax(value)
            elif leaf == "weight" and value.ndim == 2:  # a Linear (Faster R-CNN's box head)
                flat[("params", *path, "kernel")] = _linear_to_flax(path, value, tensors)
            elif leaf == "weight" and value.ndim == 1 and path[-1].endswith("_norm"):
                flat[("params", *path, "scale")] = value  # a head GroupNorm
            else:
                raise UserError(
                    f"unexpected tensor {module}.{leaf} {tuple(value.shape)} for a torchvision "
                    f"{family}: is the file for this architecture?"
                )
    return flat


def _fpn_channels(tensors: dict) -> int:
    for name in ("backbone.fpn.layer_blocks.0.0.weight", "backbone.fpn.layer_blocks.0.weight"):
        if name in tensors:
            return np.shape(tensors[name])[0]
    raise UserError("a Faster R-CNN file without backbone.fpn.layer_blocks.0: is it complete?")


def _linear_to_flax(path: tuple[str, ...], weight: np.ndarray, tensors: dict) -> np.ndarray:
    """torch Linear weight [out, in] → Flax kernel [in, out]. fc6 reads the pooled RoIs
    flattened: torch's are (C, S, S), ours (S, S, C), so its input axis is reordered."""
    if path == ("box_head", "fc6"):
        channels = _fpn_channels(tensors)
        side = math.isqrt(weight.shape[1] // channels)
        weight = weight.reshape(-1, channels, side, side).transpose(0, 2, 3, 1)
        weight = weight.reshape(weight.shape[0], -1)
    return weight.T


def _fc6_to_torch(kernel: np.ndarray, channels: int) -> np.ndarray:
    """Our fc6 kernel [(S, S, C), out] → torch's weight [out, (C, S, S)]."""
    side = math.isqrt(kernel.shape[0] // channels)
    weight = kernel.T.reshape(-1, side, side, channels).transpose(0, 3, 1, 2)
    return weight.reshape(weight.shape[0], -1)


def adapt(model_name: str, converted: dict, expected: dict) -> dict:
    """Moves BatchNorm scale/bias into batch_stats where the model keeps them there
    (norm="frozen")."""
    out = {}
    for (collection, *path, leaf), value in converted.items():
        if collection == "params" and ("batch_stats", *path, leaf) in expected:
            collection = "batch_stats"
        out[(collection, *path, leaf)] = value
    return out


def to_torch(model_name: str, flat: dict[tuple[str, ...], np.ndarray]) -> dict[str, np.ndarray]:
    """Flat jaxvision variables → torchvision detection state dict (to_flax's inverse)."""
    family = _family(model_name)
    modules: dict[tuple[str, ...], dict[tuple[str, str], np.ndarray]] = defaultdict(dict)
    for (collection, *path, leaf), value in flat.items():
        modules[tuple(path)][(collection, leaf)] = np.asarray(value)

    tensors = {}
    for path, leaves in modules.items():
        if path == ("backbone",) and family == "ssd":
            tensors["backbone.scale_weight"] = leaves[("params", "scale_weight")]
            continue
        module = _module_to_torch(family, path)
        if ("batch_stats", "mean") in leaves:
            for (_, leaf), value in leaves.items():
                tensors[f"{module}.{_BN_TO_TORCH[leaf]}"] = value
            if ("params", "scale") in leaves:  # trainable: torch's BatchNorm2d counts batches
                tensors[f"{module}.num_batches_tracked"] = np.array(0, np.int64)
            continue
        for (_, leaf), value in leaves.items():
            torch_name, tensor = param_to_torch(module, leaf, value)
            tensors[torch_name] = tensor
    if "roi_heads.box_head.fc6.weight" in tensors:
        channels = _fpn_channels(tensors)
        tensors["roi_heads.box_head.fc6.weight"] = _fc6_to_torch(
            flat[("params", "box_head", "fc6", "kernel")], channels
        )
    return tensors


def _from_classifier(family: str, key: tuple[str, ...]) -> bool:
    """Whether a torchvision classification file provides the detector's variable `key`."""
    if key[1] != "backbone":
        return False
    return family in _RESNET_FPN or bool(re.fullmatch(r"features_\d+|extra_0_[1-6]", key[2]))


def import_weights(
    model_name: str, tensors: dict[str, np.ndarray], variables: dict, *, new_head: bool = False
) -> tuple[dict, list[str]]:
    """Maps a torchvision detection or classification state dict onto `variables` (a fresh
    init of the detector, for structure and for what stays fresh).

    Returns (variables, the paths kept from `variables`, "collection/module/.../leaf"): for a
    detection file the class outputs (`detection.class_outputs`) when `new_head` or when the
    file's class count differs; for a classification file everything but the backbone layers
    it provides. Raises UserError when the file does not fit the architecture.
    """
    family = _family(model_name)
    expected = flatten(variables)
    converted = adapt(model_name, to_flax(model_name, tensors), expected)
    kept = []
    if is_classification_file(tensors):
        check_complete(
            converted,
            {k: v for k, v in expected.items() if _from_classifier(family, k)},
            f"the classification backbone for {model_name}",
        )
        for key, value in expected.items():
            if key not in converted:
                converted[key] = value
                kept.append("/".join(key))
    else:
        heads = [("params", *p.split("/")) for p in detection.class_outputs(model_name)]
        for key, value in expected.items():
            if not any(key[: len(h)] == h for h in heads):
                continue
            if new_head or key not in converted or converted[key].shape != value.shape:
                converted[key] = value
                kept.append("/".join(key))
    check_complete(converted, expected, f"weights for {model_name}")
    dtypes = {k: v.dtype for k, v in expected.items()}
    return unflatten({k: v.astype(dtypes[k]) for k, v in converted.items()}), sorted(kept)
