"""Anchors and SSD default boxes, computed once on the host with numpy (static shapes).

Both return float32 [A, 4] xyxy canvas pixels in torchvision's order: level by level, then
position by position (row-major over the feature map), then the anchors of one position. The
arithmetic is float32 in torchvision's order of operations, so the values are theirs.
"""

import math
from collections.abc import Sequence

import numpy as np

# torchvision's RetinaNet: three aspect ratios (height / width) at every level.
RETINANET_ASPECT_RATIOS = ((0.5, 1.0, 2.0),) * 5
# torchvision's ssd300_vgg16 DefaultBoxGenerator, for feature maps of 38, 19, 10, 5, 3, 1.
SSD300_FEATURE_SHAPES = ((38, 38), (19, 19), (10, 10), (5, 5), (3, 3), (1, 1))
SSD300_ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)
SSD300_STEPS = (8, 16, 32, 64, 100, 300)


def retinanet_anchor_sizes() -> tuple[tuple[int, int, int], ...]:
    """torchvision RetinaNet's anchor sizes: octave scales 2^0, 2^(1/3), 2^(2/3) of 32..512,
    truncated to ints: ((32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406),
    (512, 645, 812))."""
    return tuple(
        (s, int(s * 2 ** (1.0 / 3)), int(s * 2 ** (2.0 / 3))) for s in (32, 64, 128, 256, 512)
    )


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> np.ndarray:
    """float32 [len(ratios) * len(sizes), 4]: the anchors of one position, centred on 0 and
    rounded to whole pixels as torchvision's AnchorGenerator (ratio-major, then size; ratio is
    height / width)."""
    scales = np.asarray(sizes, np.float32)
    h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
    w_ratios = np.float32(1) / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
    hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
    # np.round rounds half to even, as torch.round.
    return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2))


def anchors_per_level(
    feature_shapes: Sequence[tuple[int, int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
) -> tuple[int, ...]:
    """How many of anchor_grid's anchors each level has: h * w * len(sizes) * len(ratios)."""
    return tuple(
        h * w * len(s) * len(r)
        for (h, w), s, r in zip(feature_shapes, sizes, aspect_ratios, strict=True)
    )


def anchor_grid(
    image_size: tuple[int, int],
    feature_shapes: Sequence[tuple[int, int]],
    sizes: Sequence[Sequence[float]],
    aspect_ratios: Sequence[Sequence[float]],
) -> np.ndarray:
    """torchvision AnchorGenerator(sizes, aspect_ratios)'s anchors for one (padded) image.

    image_size: (H, W) canvas; feature_shapes: (h, w) of each level; sizes, aspect_ratios: per
    level. The stride is H // h and W // w (integer division, as torchvision), and the anchors
    of position (i, j) are the cell anchors shifted by (j * stride_w, i * stride_h).
    Returns float32 [sum of anchors_per_level, 4] xyxy pixels.
    """
    if not len(feature_shapes) == len(sizes) == len(aspect_ratios):
        raise ValueError(
            f"need one entry per level: {len(feature_shapes)} feature shapes, {len(sizes)} "
            f"sizes and {len(aspect_ratios)} aspect ratios"
        )
    levels = []
    for (h, w), level_sizes, ratios in zip(feature_shapes, sizes, aspect_ratios, strict=True):
        stride_h, stride_w = image_size[0] // h, image_size[1] // w
        shift_y, shift_x = np.meshgrid(
            np.arange(h) * stride_h, np.arange(w) * stride_w, indexing="ij"
        )
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = np.stack([shift_x, shift_y, shift_x, shift_y], axis=1).astype(np.float32)
        base = cell_anchors(level_sizes, ratios)
        levels.append((shifts[:, None, :] + base[None, :, :]).reshape(-1, 4))
    return np.concatenate(levels, axis=0).astype(np.float32)


def default_box_scales(num_levels: int, min_ratio: float = 0.15, max_ratio: float = 0.9):
    """DefaultBoxGenerator's scales when none are given: num_levels + 1 values, evenly spaced
    from min_ratio to max_ratio, then 1.0 (one level: min_ratio, max_ratio)."""
    if num_levels == 1:
        return [min_ratio, max_ratio]
    span = max_ratio - min_ratio
    return [min_ratio + span * k / (num_levels - 1.0) for k in range(num_levels)] + [1.0]


def default_boxes(
    image_size: tuple[int, int],
    feature_shapes: Sequence[tuple[int, int]],
    aspect_ratios: Sequence[Sequence[float]],
    min_ratio: float = 0.15,
    max_ratio: float = 0.9,
    scales: Sequence[float] | None = None,
    steps: Sequence[int] | None = None,
    clip: bool = True,
) -> np.ndarray:
    """torchvision DefaultBoxGenerator's default boxes (SSD, Liu et al. 2016) for one image.

    image_size: (H, W); feature_shapes: (h, w) per level; aspect_ratios: per level, each
    ratio r giving two boxes (s sqrt(r), s / sqrt(r)) and its transpose besides the two square
    ones (s_k and sqrt(s_k s_{k+1})). scales: len(levels) + 1 values relative to the image
    (default: default_box_scales(min_ratio, max_ratio)). steps: per level, centres are
    (j + 0.5) * step / W (default: spread over the feature map). clip: clamp widths and
    heights (relative) to [0, 1]. SSD300: SSD300_ASPECT_RATIOS, SSD300_SCALES, SSD300_STEPS.
    Returns float32 [sum over levels of h * w * (2 + 2 len(ratios)), 4] xyxy pixels.
    """
    num_levels = len(aspect_ratios)
    if steps is not None and len(steps) != num_levels:
        raise ValueError(f"{len(steps)} steps for {num_levels} levels: give one per level")
    if len(feature_shapes) != num_levels:
        raise ValueError(f"{len(feature_shapes)} feature shapes for {num_levels} levels")
    scales = list(
        default_box_scales(num_levels, min_ratio, max_ratio) if scales is None else scales
    )
    height, width = image_size
    levels = []
    for k, (f_h, f_w) in enumerate(feature_shapes):
        # Width-height pairs in float64, then float32, as torchvision builds its tensor.
        s_k, s_prime = scales[k], math.sqrt(scales[k] * scales[k + 1])
        pairs = [[s_k, s_k], [s_prime, s_prime]]
        for ratio in aspect_ratios[k]:
            root = math.sqrt(ratio)
            pairs += [[s_k * root, s_k / root], [s_k / root, s_k * root]]
        wh = np.asarray(pairs, np.float32)
        if clip:
            wh = np.clip(wh, 0, 1)
        if steps is not None:
            x_f, y_f = np.float32(width / steps[k]), np.float32(height / steps[k])
        else:
            x_f, y_f = np.float32(f_w), np.float32(f_h)
        centres_x = (np.arange(f_w, dtype=np.float32) + np.float32(0.5)) / x_f
        centres_y = (np.arange(f_h, dtype=np.float32) + np.float32(0.5)) / y_f
        cy, cx = np.meshgrid(centres_y, centres_x, indexing="ij")
        centres = np.stack([cx.reshape(-1), cy.reshape(-1)], axis=1)  # [P, 2]
        centres = np.repeat(centres, len(wh), axis=0)
        sizes = np.tile(wh, (f_h * f_w, 1))
        levels.append(np.concatenate([centres, sizes], axis=1))
    boxes = np.concatenate(levels, axis=0)
    canvas = np.asarray([width, height], np.float32)
    half = np.float32(0.5) * boxes[:, 2:]
    return np.concatenate(
        [(boxes[:, :2] - half) * canvas, (boxes[:, :2] + half) * canvas], axis=1
    ).astype(np.float32)


def anchor_points(
    feature_shapes: Sequence[tuple[int, int]], strides: Sequence[float], offset: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-free heads' points (YOLO's make_anchors): the centre of every feature-map cell.

    feature_shapes: (h, w) per level; strides: per level. Returns points float32 [A, 2] (x, y)
    in each level's grid units ((j + offset, i + offset) for cell (i, j); times the stride for
    pixels) and strides float32 [A], level by level, row-major within a level.
    """
    if len(feature_shapes) != len(strides):
        raise ValueError(f"{len(feature_shapes)} feature shapes for {len(strides)} strides")
    points, point_strides = [], []
    for (h, w), stride in zip(feature_shapes, strides, strict=True):
        y, x = np.meshgrid(
            np.arange(h, dtype=np.float32) + np.float32(offset),
            np.arange(w, dtype=np.float32) + np.float32(offset),
            indexing="ij",
        )
        points.append(np.stack([x.reshape(-1), y.reshape(-1)], axis=1))
        point_strides.append(np.full(h * w, stride, np.float32))
    return np.concatenate(points), np.concatenate(point_strides)
