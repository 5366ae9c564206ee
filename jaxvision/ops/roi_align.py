"""RoIAlign (He et al., 2017) and FPN's multi-scale RoI pooling on fixed shapes, as
torchvision.ops.roi_align and torchvision.ops.MultiScaleRoIAlign compute them.

Layout: feature maps NHWC [B, H, W, C]; boxes [B, R, 4] xyxy in image pixels, R per image
(torchvision takes one [K, 5] list whose first column is the image index). Outputs are
[B, R, ph, pw, C]. Everything is jittable and differentiable in the features.

Semantics (torchvision's CPU kernel): a box is scaled by `spatial_scale` and, when `aligned`,
shifted by half a pixel; without `aligned` it is made at least 1 x 1. It is cut into ph x pw
bins; each bin averages a grid of bilinear samples at the grid cells' centres: sampling_ratio
per side, or, for sampling_ratio <= 0, ceil(box side / bins) per side and box. A sample more
than one pixel outside the map is 0; one within that pixel is read at the border.

How: the bilinear weights of a sample are a product of a y and an x factor (the outside test
too), so each axis gives two (index, weight) pairs per sample, and a bin is one gather of
(2 * grid)^2 map vectors and a weighted sum. Adaptive grids (sampling_ratio <= 0) sample a
static `max_grid` per side and mask the cells a box does not use.

Divisions are true divisions (`_divide`), rounded once as the kernel's: XLA would otherwise
compute `a / b` with b broadcast (a bin count, the number of bins) as `a * (1 / b)`, which
rounds twice. Then (i + 0.5) * 7 / 7 is 1.5000001, a sample meant for the map's far edge lands
just beyond it and is dropped, and ceil(21 / 7) is 4 cells where the kernel takes 3.
"""

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _divide(numerator, denominator):
    """numerator / denominator rounded once, as C divides. XLA rewrites a division by a
    broadcast value (a constant, a per-box count) as a multiplication by its reciprocal; a
    full-shaped divisor behind an optimization barrier is divided by as written."""
    shape = jnp.broadcast_shapes(jnp.shape(numerator), jnp.shape(denominator))
    dtype = jnp.result_type(numerator, denominator)
    denominator = jnp.broadcast_to(jnp.asarray(denominator, dtype), shape)
    return numerator / jax.lax.optimization_barrier(denominator)


def _axis_samples(start, bin_size, grid, size, pooled: int, max_grid: int):
    """One axis of every box's samples: (indices int32 [R, pooled, 2 * max_grid], weights
    [R, pooled, 2 * max_grid]); start, bin_size: [R] float; grid: [R] int (cells per bin on
    this axis); size: [R] or scalar, the map's extent on this axis. The weights include the
    outside test, the unused cells of an adaptive grid, and 1 / grid."""
    dtype = start.dtype
    p = jnp.arange(pooled, dtype=dtype)[None, :, None]
    i = jnp.arange(max_grid, dtype=dtype)[None, None, :]
    start, bin_size = start[:, None, None], bin_size[:, None, None]
    divisor = jnp.maximum(grid, 1).astype(dtype)[:, None, None]
    size = jnp.broadcast_to(jnp.asarray(size), start.shape[:1])[:, None, None]
    coord = start + p * bin_size + _divide((i + 0.5) * bin_size, divisor)
    # Written as "inside" so that NaN coordinates count as outside, as torchvision's test.
    used = (coord >= -1.0) & (coord <= size.astype(dtype)) & (i < grid[:, None, None])
    coord = jnp.where(used, jnp.maximum(coord, 0), 0)
    low = jnp.floor(coord).astype(jnp.int32)
    at_end = low >= size - 1
    low = jnp.where(at_end, size - 1, low)
    high = jnp.where(at_end, size - 1, low + 1)
    frac = jnp.where(at_end, 0, coord - low.astype(dtype))
    weight = jnp.where(used, 1 / divisor, 0)
    indices = jnp.stack([low, high], axis=-1).reshape(*low.shape[:2], -1)
    weights = jnp.stack([weight * (1 - frac), weight * frac], axis=-1).reshape(indices.shape)
    return indices.astype(jnp.int32), weights


def _box_geometry(boxes, scale, aligned: bool, output_size, sampling_ratio: int, max_grid):
    """Per-box (start y, start x, bin h, bin w, grid h, grid w) on its map."""
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (boxes[..., k] * scale - offset for k in range(4))
    w, h = x2 - x1, y2 - y1
    if not aligned:
        w, h = jnp.maximum(w, 1.0), jnp.maximum(h, 1.0)
    ph, pw = output_size
    bin_h, bin_w = _divide(h, ph), _divide(w, pw)
    if sampling_ratio > 0:
        grid_h = grid_w = jnp.full(h.shape, sampling_ratio, jnp.int32)
    else:
        # The kernel's ceil(roi height / pooled height): the bin size, rounded up.
        grid_h = jnp.clip(jnp.ceil(bin_h), 0, max_grid).astype(jnp.int32)
        grid_w = jnp.clip(jnp.ceil(bin_w), 0, max_grid).astype(jnp.int32)
    return y1, x1, bin_h, bin_w, grid_h, grid_w


def _output_size(output_size) -> tuple[int, int]:
    if isinstance(output_size, int):
        return output_size, output_size
    return tuple(int(s) for s in output_size)


def _default_max_grid(extent: int, output_size, sampling_ratio: int) -> int:
    if sampling_ratio > 0:
        return sampling_ratio
    return max(1, math.ceil(extent / min(output_size)) + 1)


def _align(flats, offsets, heights, widths, boxes, scales, output_size, sampling_ratio, aligned, g):
    """The batch: flats [B, N, C]; the rest per box [B, R] (or scalars) → [B, R, ph, pw, C].

    One gather of every sample's (2 * g)^2 neighbours from the batch's maps flattened end to
    end, then a weighted sum that XLA fuses with it (an einsum here is several times slower on
    CPU, forward and backward)."""
    ph, pw = output_size
    b, n, c = flats.shape

    def geometry(boxes, offset, height, width, scale):
        y1, x1, bin_h, bin_w, grid_h, grid_w = _box_geometry(
            boxes, scale, aligned, output_size, sampling_ratio, g
        )
        yi, yw = _axis_samples(y1, bin_h, grid_h, height, ph, g)
        xi, xw = _axis_samples(x1, bin_w, grid_w, width, pw, g)
        rows = offset[:, None, None] + yi * width[:, None, None]
        index = rows[:, :, :, None, None] + xi[:, None, None, :, :]  # [R, ph, 2g, pw, 2g]
        return index, yw[:, :, :, None, None] * xw[:, None, None, :, :]

    index, weight = jax.vmap(geometry)(boxes, offsets, heights, widths, scales)
    index = index + (jnp.arange(b, dtype=jnp.int32) * n)[:, None, None, None, None, None]
    values = jnp.take(flats.reshape(b * n, c), index, axis=0, mode="clip")
    return jnp.sum(values * weight[..., None].astype(flats.dtype), axis=(3, 5))


def roi_align(
    features: jax.Array,
    boxes: jax.Array,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    *,
    max_grid: int | None = None,
) -> jax.Array:
    """torchvision.ops.roi_align on one map per image.

    features: [B, H, W, C]; boxes: [B, R, 4] xyxy in image pixels (the map's pixels once
    multiplied by spatial_scale). Returns [B, R, ph, pw, C] in the features' dtype.
    sampling_ratio <= 0 is torchvision's adaptive grid, ceil(box side / bins) samples per bin
    side, capped at max_grid (static; default ceil(max(H, W) / min(ph, pw)) + 1, enough for
    any box inside the map): a larger box would be sampled more coarsely than torchvision's.
    """
    output_size = _output_size(output_size)
    b, h, w, c = features.shape
    dtype = jnp.result_type(boxes.dtype, jnp.float32)
    boxes = jnp.asarray(boxes, dtype)
    g = max_grid or _default_max_grid(max(h, w), output_size, sampling_ratio)
    per_box = jnp.zeros(boxes.shape[:2], jnp.int32)
    return _align(
        features.reshape(b, h * w, c),
        per_box,
        per_box + h,
        per_box + w,
        boxes,
        jnp.full(boxes.shape[:2], spatial_scale, dtype),
        output_size,
        sampling_ratio,
        aligned,
        g,
    )


def map_scales(shapes: Sequence[tuple[int, int]], image_size: tuple[int, int]) -> list[float]:
    """Each map's scale as MultiScaleRoIAlign infers it: 2**round(log2(map side / image
    side)), which must agree for both sides. image_size: (h, w), the (largest) image size."""
    scales = []
    for shape in shapes:
        both = {2.0 ** round(math.log2(s / i)) for s, i in zip(shape, image_size, strict=True)}
        if len(both) != 1:
            raise ValueError(f"map {shape} of a {image_size} image has no single power-2 scale")
        scales.append(both.pop())
    return scales


def roi_levels(
    boxes: jax.Array,
    k_min: int,
    k_max: int,
    canonical_scale: float = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> jax.Array:
    """FPN's level of each box (Lin et al., eq. 1, torchvision's LevelMapper): floor(
    canonical_level + log2(sqrt(area) / canonical_scale + eps)) clamped to [k_min, k_max],
    minus k_min. boxes: [..., 4] → int32 [...]. A box of negative area (inverted in one axis)
    has no level, -1: torchvision's mapper gives it NaN, which no level takes."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    level = jnp.floor(canonical_level + jnp.log2(jnp.sqrt(area) / canonical_scale + eps))
    level = jnp.clip(level, k_min, k_max) - k_min
    return jnp.where(jnp.isnan(level), -1, level).astype(jnp.int32)


def multiscale_roi_align(
    features: Sequence[jax.Array],
    boxes: jax.Array,
    image_size: tuple[int, int],
    output_size: int | tuple[int, int] = 7,
    sampling_ratio: int = 2,
    *,
    canonical_scale: float = 224,
    canonical_level: int = 4,
    max_grid: int | None = None,
) -> jax.Array:
    """torchvision.ops.MultiScaleRoIAlign (aligned=False) over FPN maps.

    features: [[B, H_l, W_l, C]] finest first, each a power-2 scale of image_size (h, w; the
    canvas, static); boxes: [B, R, 4] xyxy image pixels. Each box is pooled from the map of
    its `roi_levels` level (k_min, k_max from the first and last maps' scales); with one map
    every box uses it; a box without a level (`roi_levels`: inverted) pools zeros, as in
    torchvision. Returns [B, R, ph, pw, C]. One gather serves all levels: the maps are
    flattened side by side and each box reads its own.
    """
    output_size = _output_size(output_size)
    shapes = [tuple(f.shape[1:3]) for f in features]
    scales = map_scales(shapes, image_size)
    dtype = jnp.result_type(boxes.dtype, jnp.float32)
    boxes = jnp.asarray(boxes, dtype)
    if len(features) == 1:
        level = jnp.zeros(boxes.shape[:2], jnp.int32)
    else:
        k_min, k_max = (round(-math.log2(s)) for s in (scales[0], scales[-1]))
        level = roi_levels(boxes, k_min, k_max, canonical_scale, canonical_level)
    offsets = np.cumsum([0] + [h * w for h, w in shapes[:-1]])
    table = {
        "offset": jnp.asarray(offsets, jnp.int32),
        "height": jnp.asarray([h for h, _ in shapes], jnp.int32),
        "width": jnp.asarray([w for _, w in shapes], jnp.int32),
        "scale": jnp.asarray(scales, dtype),
    }
    per_box = {k: v[jnp.maximum(level, 0)] for k, v in table.items()}
    b, c = boxes.shape[0], features[0].shape[-1]
    flat = jnp.concatenate([f.reshape(b, -1, c) for f in features], axis=1)
    extent = max(max(s) for s in shapes)
    g = max_grid or _default_max_grid(extent, output_size, sampling_ratio)
    pooled = _align(
        flat,
        per_box["offset"],
        per_box["height"],
        per_box["width"],
        boxes,
        per_box["scale"],
        output_size,
        sampling_ratio,
        False,
        g,
    )
    return jnp.where((level >= 0)[:, :, None, None, None], pooled, 0)
