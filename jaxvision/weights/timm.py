"""timm ViT / R50+ViT hybrid / MLP-Mixer weights <-> jaxvision.models.vit and .mixer.

Flax paths are timm's names with `.N.` folded into the module name (`blocks.3.mlp.fc1` ->
`blocks_3/mlp/fc1`), torch layouts transposed, and norm `weight` called `scale`. Two renames:
timm's fused `attn.qkv` is split into `attn/query|key|value` and `attn.proj` is `attn/out`.

A timm file does not record the number of heads, so `to_flax` leaves attention kernels with the
heads fused ([D, D]); `adapt` splits them into the model's [D, heads, D/heads] layout, and
resamples the position embedding when the file's grid differs from the model's.
"""

import math
import re

import jax
import numpy as np

from jaxvision.errors import UserError
from jaxvision.weights import big_vision
from jaxvision.weights.common import (
    conv_to_flax,
    dense_to_flax,
    dense_to_torch,
    param_to_torch,
)

# Parameters stored as they are: no layout change, no "weight"/"bias" leaf.
_RAW = ("cls_token", "pos_embed")
_QKV = ("query", "key", "value")


def _flax_module_path(torch_module: str) -> tuple[str, ...]:
    """'patch_embed.backbone.stages.0.blocks.1.conv2' -> (..., 'stages_0', 'blocks_1', 'conv2')."""
    parts: list[str] = []
    for part in torch_module.split("."):
        if part.isdigit():
            parts[-1] = f"{parts[-1]}_{part}"
        else:
            parts.append(part)
    return tuple(parts)


def _torch_module_name(path: tuple[str, ...]) -> str:
    return ".".join(re.sub(r"_(\d+)$", r".\1", part) for part in path)


def to_flax(model_name: str, tensors: dict[str, np.ndarray]) -> dict[tuple[str, ...], np.ndarray]:
    """timm state dict (`{name: array}`) -> flat `{("params", ...): array}` (attention fused)."""
    del model_name  # the layout follows from the names; shapes are checked against the model
    flat = {}
    for name, value in tensors.items():
        value = np.asarray(value)
        if name in _RAW:
            flat[("params", name)] = value
            continue
        module, _, leaf = name.rpartition(".")
        path = ("params", *_flax_module_path(module))
        if path[-1] == "qkv":  # [3D, D] rows: q, k, v
            for part_name, part in zip(_QKV, np.split(value, 3), strict=True):
                key = (*path[:-1], part_name, "kernel" if leaf == "weight" else "bias")
                flat[key] = dense_to_flax(part) if leaf == "weight" else part
            continue
        if path[-2:] == ("attn", "proj"):
            path = (*path[:-1], "out")
        if leaf == "bias":
            flat[(*path, "bias")] = value
        elif leaf != "weight":
            raise UserError(f"unexpected tensor {name!r}: is this a timm ViT/Mixer state dict?")
        elif value.ndim == 4:
            flat[(*path, "kernel")] = conv_to_flax(value)
        elif value.ndim == 2:
            flat[(*path, "kernel")] = dense_to_flax(value)
        else:  # LayerNorm / GroupNorm
            flat[(*path, "scale")] = value
    return flat


def to_torch(model_name: str, flat: dict[tuple[str, ...], np.ndarray]) -> dict[str, np.ndarray]:
    """flat `{("params", ...): array}` of a ViT/Mixer -> timm state dict (torch layouts)."""
    del model_name
    tensors: dict[str, np.ndarray] = {}
    qkv: dict[tuple[str, ...], dict[str, np.ndarray]] = {}
    for key, value in flat.items():
        value = np.asarray(value)
        if key[0] != "params":
            raise UserError(f"unexpected collection {key[0]!r} in a ViT/Mixer: only params")
        path, leaf = key[1:-1], key[-1]
        if key[1:] in {(n,) for n in _RAW}:
            tensors[key[1]] = value
            continue
        if path and path[-1] in _QKV:  # [D, H, Dh] kernels, [H, Dh] biases: fuse heads
            matrix = value.reshape(value.shape[0], -1) if leaf == "kernel" else value.reshape(-1)
            qkv.setdefault((*path[:-1], leaf), {})[path[-1]] = matrix
            continue
        if path and path[-1] == "out" and len(path) > 1 and path[-2] == "attn":
            path = (*path[:-1], "proj")
            if leaf == "kernel":  # [H, Dh, D] -> [D_in, D_out]
                value = value.reshape(-1, value.shape[-1])
        torch_name, tensor = param_to_torch(_torch_module_name(path), leaf, value)
        tensors[torch_name] = tensor
    for (*path, leaf), parts in qkv.items():
        stacked = [parts[n] for n in _QKV]
        name = f"{_torch_module_name(tuple(path))}.qkv"
        if leaf == "kernel":
            tensors[f"{name}.weight"] = np.concatenate([dense_to_torch(p) for p in stacked])
        else:
            tensors[f"{name}.bias"] = np.concatenate(stacked)
    return tensors


def resample_posemb(
    posemb: np.ndarray, new_grid: int, num_prefix: int, method: str = "bicubic"
) -> np.ndarray:
    """Resizes a position embedding's square grid, keeping its prefix (class token) rows.

    posemb: [1, num_prefix + g*g, D] -> [1, num_prefix + new_grid**2, D].
    """
    prefix, grid = posemb[:, :num_prefix], posemb[:, num_prefix:]
    old_grid = math.isqrt(grid.shape[1])
    if old_grid * old_grid != grid.shape[1]:
        raise UserError(f"position embedding of {grid.shape[1]} tokens is not a square grid")
    d = grid.shape[-1]
    grid = grid.reshape(old_grid, old_grid, d)
    resized = jax.image.resize(grid, (new_grid, new_grid, d), method=method, antialias=True)
    resized = np.asarray(resized, posemb.dtype).reshape(1, new_grid * new_grid, d)
    return np.concatenate([prefix, resized], axis=1)


def adapt(model_name: str, converted: dict, expected: dict) -> dict:
    """Fits `converted` (from `to_flax`) to the model's shapes in `expected`: splits attention
    heads and resamples the position embedding to the model's grid (bicubic, as timm)."""
    del model_name
    out = dict(converted)
    for key, value in converted.items():
        if key not in expected or value.shape == expected[key].shape:
            continue
        want = expected[key].shape
        if "attn" in key and value.size == int(np.prod(want)):
            out[key] = value.reshape(want)  # fused heads [.., H*Dh, ..] -> [.., H, Dh, ..]
        elif key == ("params", "pos_embed") and value.shape[-1] == want[-1]:
            num_prefix = int(("params", "cls_token") in expected)
            new_grid = math.isqrt(want[1] - num_prefix)
            out[key] = resample_posemb(value, new_grid, num_prefix)
    return out


def load_npz(model_name: str, path: str) -> dict[str, np.ndarray]:
    """A big_vision / google-research vision_transformer `.npz` as timm-named torch tensors."""
    del model_name
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = dict(npz)
    except (OSError, ValueError) as e:
        raise UserError(
            f"cannot read {path} as a numpy .npz ({e}): is the file complete?"
        ) from None
    return big_vision.to_timm(arrays)
