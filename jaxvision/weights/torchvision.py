"""torchvision state dicts <-> jaxvision variables: ResNet, VGG, GoogLeNet, Inception v3, DenseNet.

The models name their submodules after torchvision's, so a tensor's module path maps by rule:
`layer2.0.downsample.0.weight` ↔ params/layer2_0/downsample_conv/kernel (ResNet),
`features.10.weight` ↔ params/features_10/kernel (VGG), `inception4a.branch2.1.bn.running_mean`
↔ batch_stats/inception4a/branch2_1/bn/mean (GoogLeNet), `Mixed_6b.branch7x7_2.conv.weight` ↔
params/Mixed_6b/branch7x7_2/conv/kernel (Inception v3, names kept), and
`features.denseblock1.denselayer1.norm1.bias` ↔ params/denseblock1/denselayer1/norm1/bias
(DenseNet, `features.` dropped). A module's kind follows from its tensors: BatchNorm has
running stats, a conv a 4-d weight, a linear layer a 2-d one.
"""

import re
from collections import defaultdict

import numpy as np

from jaxvision.errors import UserError
from jaxvision.weights.common import conv_to_flax, dense_to_flax, param_to_torch

_FAMILIES = ("resnet", "vgg", "googlenet", "inception_v3", "densenet")
# Auxiliary heads: in torchvision's pretrained files, optional in our models (`aux_logits`).
_AUX = {"googlenet": ("aux1", "aux2"), "inception_v3": ("AuxLogits",)}
# torch BatchNorm tensor -> (collection, flax leaf).
_BN = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}
_BN_TO_TORCH = {v: k for k, v in _BN.items()}
# ResNet's projection shortcut is an nn.Sequential(conv, bn) in torch, two named modules here.
_RESNET_DOWNSAMPLE = {"downsample_0": "downsample_conv", "downsample_1": "downsample_bn"}
# Old torchvision DenseNet files (the published ImageNet ones) name `norm1` as `norm.1`.
_DENSENET_LEGACY = re.compile(r"(denselayer\d+\.(?:norm|relu|conv))\.([12])\.")


def _family(model_name: str) -> str:
    for family in _FAMILIES:
        if model_name.startswith(family):
            return family
    raise UserError(f"no torchvision converter for model '{model_name}'")


def _join_indices(parts: list[str]) -> list[str]:
    """nn.Sequential indices join their parent: ["layer1", "0", "conv1"] → ["layer1_0", "conv1"]."""
    out: list[str] = []
    for part in parts:
        if part.isdigit() and out:
            out[-1] += f"_{part}"
        else:
            out.append(part)
    return out


def _module_to_flax(family: str, module: str) -> tuple[str, ...]:
    parts = module.split(".")
    if family == "inception_v3":  # no nn.Sequential; names such as branch7x7_1 stay as they are
        return tuple(parts)
    if family == "densenet":
        return tuple(parts[1:] if parts[0] == "features" else parts)
    parts = _join_indices(parts)
    if family == "resnet":
        parts = [_RESNET_DOWNSAMPLE.get(p, p) for p in parts]
    return tuple(parts)


def _module_to_torch(family: str, path: tuple[str, ...]) -> str:
    if family == "inception_v3":
        return ".".join(path)
    if family == "densenet":
        return ".".join(path if path[0] == "classifier" else ("features", *path))
    if family == "resnet":
        inverse = {v: k for k, v in _RESNET_DOWNSAMPLE.items()}
        path = tuple(inverse.get(p, p) for p in path)
    return ".".join(re.sub(r"_(\d+)$", r".\1", p) for p in path)


def to_flax(model_name: str, tensors: dict[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """torch state dict {name: array} → flat {("params"|"batch_stats", *module, leaf): array}.

    Conv weights go OIHW → HWIO, linear weights are transposed, BatchNorm weight/bias become
    params scale/bias and its running stats batch_stats mean/var; num_batches_tracked is
    dropped (flax keeps no step count).
    """
    family = _family(model_name)
    modules: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for name, value in tensors.items():
        if family == "densenet":
            name = _DENSENET_LEGACY.sub(r"\1\2.", name)
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
                collection, flax_leaf = _BN[leaf]
                flat[(collection, *path, flax_leaf)] = value
            continue
        for leaf, value in leaves.items():
            if leaf == "bias":
                flat[("params", *path, "bias")] = value
            elif leaf == "weight" and value.ndim == 4:
                flat[("params", *path, "kernel")] = conv_to_flax(value)
            elif leaf == "weight" and value.ndim == 2:
                flat[("params", *path, "kernel")] = dense_to_flax(value)
            else:
                raise UserError(
                    f"unexpected tensor {module}.{leaf} {tuple(value.shape)} for a torchvision "
                    f"{family}: is the file for this architecture?"
                )
    return flat


def to_torch(model_name: str, flat: dict[tuple[str, ...], np.ndarray]) -> dict[str, np.ndarray]:
    """Flat jaxvision variables → torchvision state dict {name: array} (to_flax's inverse).

    BatchNorm modules also get `num_batches_tracked` = int64 0, as a fresh torch module has.
    """
    family = _family(model_name)
    modules: dict[tuple[str, ...], dict[tuple[str, str], np.ndarray]] = defaultdict(dict)
    for key, value in flat.items():
        collection, *path, leaf = key
        modules[tuple(path)][(collection, leaf)] = np.asarray(value)

    tensors = {}
    for path, leaves in modules.items():
        module = _module_to_torch(family, path)
        if ("batch_stats", "mean") in leaves:
            for key, value in leaves.items():
                tensors[f"{module}.{_BN_TO_TORCH[key]}"] = value
            tensors[f"{module}.num_batches_tracked"] = np.array(0, np.int64)
            continue
        for (_, leaf), value in leaves.items():
            torch_name, tensor = param_to_torch(module, leaf, value)
            tensors[torch_name] = tensor
    return tensors


def adapt(model_name: str, converted: dict, expected: dict) -> dict:
    """Fits auxiliary heads to the model: dropped when it has none (`aux_logits=False`, while
    torchvision's ImageNet files carry them), kept fresh from `expected` when the file lacks
    them or its aux classifiers have another num_classes."""
    prefixes = _AUX.get(_family(model_name), ())
    if not prefixes:
        return converted
    is_aux = lambda key: len(key) > 1 and key[1] in prefixes  # noqa: E731
    out = {k: v for k, v in converted.items() if not is_aux(k) or k in expected}
    for key, value in expected.items():
        if is_aux(key) and (key not in out or out[key].shape != value.shape):
            out[key] = value
    return out
