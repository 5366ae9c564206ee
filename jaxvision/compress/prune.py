"""Magnitude pruning of a classifier's conv and dense kernels, and an optimizer that keeps the
pruned weights at zero while the rest fine-tune.

    masks = magnitude_masks(params, 0.5, skip=("fc",))     # {path: [..., O] float32 0/1}
    params = apply_masks(params, masks)
    tx = optax.chain(tx, keep_masked(masks))              # pruned weights stay 0

Unstructured: one global threshold on |w| over every kernel (the smallest `sparsity` share of
all their weights goes). Structured: in each kernel, the `sparsity` share of its output
channels with the smallest L1 (or L2) norm goes, whole. The classifier (`skip`) stays dense:
pruning its output channels would remove classes.

The masks live in the optimizer state (`MaskState`), so they are saved in every checkpoint and
a resumed run keeps the very masks it started with.
"""

from typing import NamedTuple

import flax
import jax.numpy as jnp
import numpy as np
import optax

from jaxvision.compress.quantize import is_kernel
from jaxvision.errors import UserError


def _kernels(params, skip) -> dict:
    flat = flax.traverse_util.flatten_dict(params)
    return {k: np.asarray(v) for k, v in flat.items() if is_kernel(k, v) and k[0] not in skip}


def magnitude_masks(
    params, sparsity: float, *, structured: bool = False, norm: str = "l1", skip=()
) -> dict:
    """{path tuple: 0/1 float32 mask of that kernel's shape} for every conv / dense kernel of
    `params` whose top-level module is not in `skip`. sparsity: the share of weights
    (unstructured, exactly floor(sparsity * total) of them, ties broken by position) or of
    each kernel's output channels (structured, floor(sparsity * O) per kernel) set to 0."""
    if not 0 <= sparsity < 1:
        raise UserError(f"sparsity={sparsity}: give a share in [0, 1)")
    if norm not in ("l1", "l2"):
        raise UserError(f"unknown norm {norm!r}: use l1 or l2")
    kernels = _kernels(params, skip)
    if not kernels:
        raise UserError("the model has no conv or dense kernels to prune")
    masks = {}
    if structured:
        for path, w in kernels.items():
            channels = w.reshape(-1, w.shape[-1])
            scores = np.abs(channels).sum(0) if norm == "l1" else np.sqrt((channels**2).sum(0))
            drop = np.argsort(scores, kind="stable")[: int(sparsity * w.shape[-1])]
            keep = np.ones(w.shape[-1], np.float32)
            keep[drop] = 0
            masks[path] = np.broadcast_to(keep, w.shape).copy()
        return masks
    magnitudes = np.concatenate([np.abs(w).ravel() for w in kernels.values()])
    drop = np.argsort(magnitudes, kind="stable")[: int(sparsity * magnitudes.size)]
    keep = np.ones(magnitudes.size, np.float32)
    keep[drop] = 0
    start = 0
    for path, w in kernels.items():
        masks[path] = keep[start : start + w.size].reshape(w.shape)
        start += w.size
    return masks


def apply_masks(params, masks: dict):
    """`params` with each masked kernel multiplied by its mask (paths as `magnitude_masks`)."""
    flat = flax.traverse_util.flatten_dict(params)
    for path, mask in masks.items():
        flat[path] = flat[path] * jnp.asarray(mask, flat[path].dtype)
    return flax.traverse_util.unflatten_dict(flat)


def sparsity_of(params, masks: dict) -> float:
    """The share of exact zeros among the masked kernels' weights."""
    flat = flax.traverse_util.flatten_dict(params)
    zeros = sum(int(np.sum(np.asarray(flat[p]) == 0)) for p in masks)
    return zeros / sum(np.size(m) for m in masks.values())


class MaskState(NamedTuple):
    """The masks as a nested dict laid out like the parameters they cover (so they are
    checkpointed and sharded like them)."""

    masks: dict


def keep_masked(masks: dict) -> optax.GradientTransformation:
    """An optax transformation, last in a chain, that re-applies `masks` at every step: the
    update of a pruned weight becomes -weight, so a pruned weight is 0 after every
    step whatever the gradient, momentum or weight decay say. Its state holds the masks."""
    nested = flax.traverse_util.unflatten_dict({k: jnp.asarray(v) for k, v in masks.items()})

    def init(params):
        del params
        return MaskState(nested)

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("keep_masked needs the parameters: call tx.update(g, s, params)")
        flat_u = flax.traverse_util.flatten_dict(updates)
        flat_p = flax.traverse_util.flatten_dict(params)
        for path, mask in flax.traverse_util.flatten_dict(state.masks).items():
            flat_u[path] = jnp.where(mask > 0, flat_u[path], -flat_p[path])
        return flax.traverse_util.unflatten_dict(flat_u), state

    return optax.GradientTransformation(init, update)


def save_masks(path: str, masks: dict) -> None:
    """masks as an .npz of "module/.../kernel" -> uint8 0/1 arrays."""
    np.savez_compressed(path, **{"/".join(k): v.astype(np.uint8) for k, v in masks.items()})


def load_masks(path: str) -> dict:
    """The masks `save_masks` wrote, with a one-line error when the file is missing or holds
    a mask of other values than 0 and 1 (a cast would keep a fraction of a weight)."""
    try:
        with np.load(path) as f:
            masks = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read prune masks {path}: {e}; run jaxvision prune") from None
    for name, mask in masks.items():
        if not np.isin(mask, (0, 1)).all():
            raise UserError(
                f"prune masks {path}: {name} holds values other than 0 and 1 ({mask.dtype}): "
                "write masks with jaxvision prune"
            )
    return {tuple(k.split("/")): v.astype(np.float32) for k, v in masks.items()}
