"""Occlusion (Zeiler & Fergus 2014), as captum's Occlusion: a window of the baseline value
slides over the image; each pixel's attribution is the mean, over the windows covering it, of
the drop in the target logit when that window is hidden."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxvision.errors import UserError
from jaxvision.explain.core import ModelFunction, chunked, target_logit


def occlusion(
    fn: ModelFunction,
    x,
    targets,
    *,
    window: int = 0,
    stride: int = 0,
    fill: float = 0.0,
    chunk: int = 16,
) -> jax.Array:
    """x [B, S, S, C] -> [B, S, S] attributions. window: the square's side in pixels (default
    S / 8, at least 1); stride: its step (default window / 2, at least 1); fill: the value of
    hidden pixels in x's space (0: the dataset mean). Windows are evaluated `chunk` at a time."""
    side = x.shape[1]
    window = window or max(1, side // 8)
    stride = stride or max(1, window // 2)
    if not 1 <= window <= side or stride < 1:
        raise UserError(f"occlusion window {window} / stride {stride} do not fit {side} pixels")
    starts = list(range(0, side - window + 1, stride))
    if starts[-1] != side - window:
        starts.append(side - window)  # the last row / column of pixels is covered too
    corners = np.array([(y, x0) for y in starts for x0 in starts], np.int32)
    values, weights = chunked(corners, np.ones(len(corners), np.float32), chunk)
    grid = jnp.arange(side)

    def masks(corner):
        rows = (grid >= corner[0]) & (grid < corner[0] + window)
        cols = (grid >= corner[1]) & (grid < corner[1] + window)
        return (rows[:, None] & cols[None, :]).astype(x.dtype)  # [S, S]

    def run(fn, x, targets, values, weights):
        base = target_logit(fn.logits(x), targets)  # [B]

        def step(carry, chunk_values):
            total, count = carry
            corners, w = chunk_values
            m = jax.vmap(masks)(corners)  # [chunk, S, S]
            hidden = x[None] * (1 - m[:, None, :, :, None]) + fill * m[:, None, :, :, None]
            flat = hidden.reshape(-1, *x.shape[1:])
            drop = base[None] - target_logit(
                fn.logits(flat), jnp.tile(targets, len(corners))
            ).reshape(len(corners), -1)  # [chunk, B]
            total = total + jnp.einsum("k,kb,kij->bij", w, drop, m)
            return (total, count + jnp.einsum("k,kij->ij", w, m)), None

        zeros = jnp.zeros(x.shape[:3], jnp.float32)
        (total, count), _ = jax.lax.scan(step, (zeros, jnp.zeros((side, side))), (values, weights))
        return total / jnp.maximum(count, 1)

    return fn.jit(run)(x, jnp.asarray(targets), values, weights)
