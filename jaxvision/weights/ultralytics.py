"""Ultralytics YOLO state dicts (YOLOv8, YOLO11, YOLO26) <-> jaxvision's YOLO detectors.

jaxvision.models.detection.yolo names its modules after the reference's, so module paths map
by one rule: a run of numeric parts joins the name before it,

  model.2.m.0.cv1.conv            ↔ model_2/m_0/cv1/conv
  model.22.m.0.1.attn.qkv.bn      ↔ model_22/m_0_1/attn/qkv/bn       (a Sequential in C3k2)
  model.23.cv3.0.0.0.conv         ↔ model_23/cv3_0_0_0/conv          (the head's towers)
  model.23.one2one_cv2.1.2        ↔ model_23/one2one_cv2_1_2         (end-to-end branch)

and back (`_\\d+` becomes `.\\d+`; no other name has an underscore before a digit). Tensors:
conv `weight` [O, I/groups, kh, kw] ↔ `kernel` [kh, kw, I/groups, O]; conv `bias`; BatchNorm
`weight`/`bias` ↔ params scale/bias and `running_mean`/`running_var` ↔ batch_stats mean/var.
`num_batches_tracked` is dropped (export writes 0). The head's `dfl.conv.weight` is a fixed
arange(reg_max) that the reference stores as a (frozen) parameter: it is checked, not
imported (jaxvision's decoding has the same constants), and written back on export.

A reference checkpoint (`.pt`, a pickle) is converted once, in a torch environment, to a
safetensors file of its state dict: see docs/models_and_weights.md.
"""

import re
from collections import defaultdict

import numpy as np

from jaxvision.errors import UserError
from jaxvision.models import detection
from jaxvision.weights.common import (
    check_complete,
    conv_to_flax,
    conv_to_torch,
    flatten,
    unflatten,
)

_BN = {"weight": "scale", "bias": "bias", "running_mean": "mean", "running_var": "var"}
_BN_TO_TORCH = {v: k for k, v in _BN.items()}
_DFL = re.compile(r"model\.(\d+)\.dfl\.conv\.weight")


def _check_model(model_name: str) -> None:
    if model_name not in detection.names() or detection.family(model_name) != "yolo":
        raise UserError(f"no Ultralytics YOLO converter for model '{model_name}'")


def module_to_flax(module: str) -> tuple[str, ...]:
    """ "model.22.cv2.0.0.conv" → ("model_22", "cv2_0_0", "conv")."""
    parts: list[str] = []
    for part in module.split("."):
        if part.isdigit() and parts:
            parts[-1] += f"_{part}"
        else:
            parts.append(part)
    return tuple(parts)


def module_to_torch(path: tuple[str, ...]) -> str:
    """("model_22", "cv2_0_0", "conv") → "model.22.cv2.0.0.conv"."""
    return ".".join(re.sub(r"_(\d+)", r".\1", p) for p in path)


def _check_dfl(name: str, value: np.ndarray) -> None:
    """DFL's integral weights must be 0, 1, ..., reg_max - 1: the decoding assumes them."""
    bins = np.asarray(value, np.float64).reshape(-1)
    if not np.array_equal(bins, np.arange(bins.size)):
        raise UserError(
            f"{name} is not 0..{bins.size - 1} (got {bins[:4].tolist()}...): jaxvision decodes "
            "boxes with the reference's fixed DFL weights; the file was altered"
        )


def to_flax(model_name: str, tensors: dict[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """Reference state dict → flat {(collection, *path, leaf): array}. UserError for a tensor
    that is not the reference's (wrong leaf, a BatchNorm without its statistics, a bad DFL)."""
    _check_model(model_name)
    modules: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for name, value in tensors.items():
        if _DFL.fullmatch(name):
            _check_dfl(name, value)
            continue
        module, _, leaf = name.rpartition(".")
        modules[module][leaf] = np.asarray(value)

    flat = {}
    for module, leaves in modules.items():
        path = module_to_flax(module)
        leaves.pop("num_batches_tracked", None)
        if "running_mean" in leaves or "running_var" in leaves:
            for leaf, value in leaves.items():
                if leaf not in _BN:
                    raise UserError(f"unexpected BatchNorm tensor {module}.{leaf} in the file")
                collection = "batch_stats" if leaf.startswith("running_") else "params"
                flat[(collection, *path, _BN[leaf])] = value
            continue
        for leaf, value in leaves.items():
            if leaf == "weight" and value.ndim == 4:
                flat[("params", *path, "kernel")] = conv_to_flax(value)
            elif leaf == "bias" and value.ndim == 1:
                flat[("params", *path, "bias")] = value
            else:
                raise UserError(
                    f"unexpected tensor {module}.{leaf} {tuple(value.shape)} for {model_name}: "
                    "is the file an Ultralytics YOLO detection state dict?"
                )
    return flat


def to_torch(model_name: str, flat: dict[tuple[str, ...], np.ndarray]) -> dict[str, np.ndarray]:
    """Flat jaxvision variables → the reference's state dict (to_flax's inverse), with
    `num_batches_tracked` 0 and, for reg_max > 1, DFL's arange: what its load_state_dict
    expects."""
    _check_model(model_name)
    modules: dict[tuple[str, ...], dict[tuple[str, str], np.ndarray]] = defaultdict(dict)
    for (collection, *path, leaf), value in flat.items():
        modules[tuple(path)][(collection, leaf)] = np.asarray(value)

    tensors = {}
    for path, leaves in modules.items():
        module = module_to_torch(path)
        if ("batch_stats", "mean") in leaves:
            for (_, leaf), value in leaves.items():
                tensors[f"{module}.{_BN_TO_TORCH[leaf]}"] = value
            tensors[f"{module}.num_batches_tracked"] = np.array(0, np.int64)
            continue
        for (_, leaf), value in leaves.items():
            if leaf == "kernel":
                tensors[f"{module}.weight"] = conv_to_torch(value)
            else:
                tensors[f"{module}.{leaf}"] = value
        if re.fullmatch(r"model\.\d+\.cv2\.0\.2", module):  # the head: its DFL, if any
            reg_max = leaves[("params", "kernel")].shape[-1] // 4
            if reg_max > 1:
                head = module.split(".cv2.")[0]
                tensors[f"{head}.dfl.conv.weight"] = np.arange(reg_max, dtype=np.float32).reshape(
                    1, reg_max, 1, 1
                )
    return tensors


def import_weights(
    model_name: str, tensors: dict[str, np.ndarray], variables: dict, *, new_head: bool = False
) -> tuple[dict, list[str]]:
    """Maps a reference state dict onto `variables` (a fresh init of the model, for structure
    and for what stays fresh).

    Returns (variables, the paths kept from `variables`, "collection/module/.../leaf"): the class
    towers (`detection.class_outputs`, parameters and BatchNorm statistics) when `new_head` or
    where the file's shapes differ (another number of classes). Raises UserError when the file
    does not fit the architecture.
    """
    _check_model(model_name)
    expected = flatten(variables)
    converted = to_flax(model_name, tensors)
    heads = [
        (collection, *p.split("/"))
        for collection in ("params", "batch_stats")
        for p in detection.class_outputs(model_name)
    ]
    kept = []
    for key, value in expected.items():
        if not any(key[: len(h)] == h for h in heads):
            continue
        if new_head or key not in converted or converted[key].shape != value.shape:
            converted[key] = value
            kept.append("/".join(key))
    check_complete(converted, expected, f"weights for {model_name}")
    dtypes = {k: v.dtype for k, v in expected.items()}
    return unflatten({k: v.astype(dtypes[k]) for k, v in converted.items()}), sorted(kept)
