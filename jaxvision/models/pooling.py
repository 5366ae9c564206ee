"""Pooling with torch's output sizes: ceil_mode max pooling and adaptive average pooling.

flax's `max_pool`/`avg_pool` floor the output size and have no adaptive variant; torchvision's
GoogLeNet (ceil_mode=True) and VGG/GoogLeNet aux heads (AdaptiveAvgPool2d) need both to give
torch's shapes and numbers, so that imported weights see the same activations.
"""

import math

import flax.linen as nn
import jax.numpy as jnp


def pool_output_size(size: int, window: int, stride: int, padding: int, ceil_mode: bool) -> int:
    """torch.nn.MaxPool2d's output length along one axis."""
    span = size + 2 * padding - window
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    # torch drops a last window that would start in the right padding (or past it).
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def max_pool(
    x: jnp.ndarray, window: int, stride: int, padding: int = 0, ceil_mode: bool = False
) -> jnp.ndarray:
    """torch.nn.MaxPool2d(window, stride, padding, ceil_mode) on x: [B, H, W, C] (NHWC).

    ceil_mode pads the right/bottom edge with -inf so the last partial window is kept.
    """
    pads = []
    for size in x.shape[1:3]:
        out = pool_output_size(size, window, stride, padding, ceil_mode)
        extra = max((out - 1) * stride + window - (size + 2 * padding), 0)
        pads.append((padding, padding + extra))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=tuple(pads))


def avg_pool(x: jnp.ndarray, window: int, stride: int, padding: int = 0) -> jnp.ndarray:
    """torch.nn.functional.avg_pool2d (count_include_pad=True, floor) on x: [B, H, W, C]."""
    pads = ((padding, padding), (padding, padding))
    return nn.avg_pool(x, (window, window), (stride, stride), pads, count_include_pad=True)


def _adaptive_mean(x: jnp.ndarray, axis: int, out: int) -> jnp.ndarray:
    size = x.shape[axis]
    if size == out:
        return x
    if size % out == 0:  # equal, disjoint windows: one reshape
        shape = x.shape[:axis] + (out, size // out) + x.shape[axis + 1 :]
        return x.reshape(shape).mean(axis + 1)
    # torch's windows: [floor(i * size / out), ceil((i + 1) * size / out)); they may overlap,
    # and repeat rows when size < out.
    parts = []
    for i in range(out):
        start, end = (i * size) // out, -((-(i + 1) * size) // out)
        index = [slice(None)] * x.ndim
        index[axis] = slice(start, end)
        parts.append(x[tuple(index)].mean(axis, keepdims=True))
    return jnp.concatenate(parts, axis)


def adaptive_avg_pool(x: jnp.ndarray, output_size: tuple[int, int]) -> jnp.ndarray:
    """torch.nn.AdaptiveAvgPool2d(output_size): x: [B, H, W, C] → [B, oh, ow, C].

    Separable: a 2D window mean is the mean over rows of the mean over columns, since torch's
    window along H does not depend on the column and vice versa.
    """
    x = _adaptive_mean(x, 1, output_size[0])
    return _adaptive_mean(x, 2, output_size[1])
