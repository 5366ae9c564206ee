"""YOLO's augmentation operations on numpy images (uint8 [H, W, 3] RGB) and xyxy pixel boxes:
the reference's image load, letterbox, mosaic, random affine with its box filter, HSV jitter
and flips. `yolo_transforms` composes them into the training and evaluation transforms and
says where they differ from the reference (Ultralytics).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image

PAD_VALUE = 114  # the reference's grey for padding and warp borders


def take(fields: dict, keep: np.ndarray) -> dict:
    """The rows `keep` (bool or indices) of every per-box field."""
    return {k: v[keep] for k, v in fields.items()}


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    pil = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(pil)


# ---------------------------------------------------------------------------------------------
# load and letterbox


def resize_long_side(
    image: np.ndarray, boxes: np.ndarray, canvas: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The reference's image load: the longer side to `canvas`, the shorter to
    `min(ceil(side * canvas / long), canvas)`; boxes follow by the exact per-axis factors.

    Args:
        image: uint8 [H, W, 3]; boxes: float32 [N, 4] xyxy pixels; canvas: S.

    Returns:
        (uint8 [h, w, 3] with max(h, w) = S, float32 [N, 4], float32 [2] (sy, sx) = (h / H, w / W)).
    """
    height, width = image.shape[:2]
    ratio = canvas / max(height, width)
    new_h = min(math.ceil(height * ratio), canvas)
    new_w = min(math.ceil(width * ratio), canvas)
    sy, sx = new_h / height, new_w / width
    scaled = np.asarray(boxes, np.float64).reshape(-1, 4) * (sx, sy, sx, sy)
    return _resize(image, new_h, new_w), scaled.astype(np.float32), np.array([sy, sx], np.float32)


def letterbox_geometry(
    height: int, width: int, canvas: int, scaleup: bool = True
) -> tuple[tuple[int, int], tuple[int, int]]:
    """The reference's letterbox layout of an H x W image on an S x S canvas.

    ratio = min(S / H, S / W) (at most 1 without `scaleup`); the image resized to
    (max(round(H * ratio), 1), max(round(W * ratio), 1)) and centred: of the d pixels of
    padding on an axis, floor(d / 2) go before it (top/left) and the rest after.

    Returns:
        ((new_h, new_w), (top, left)).
    """
    ratio = min(canvas / height, canvas / width)
    if not scaleup:
        ratio = min(ratio, 1.0)
    new_h, new_w = max(round(height * ratio), 1), max(round(width * ratio), 1)
    return (new_h, new_w), ((canvas - new_h) // 2, (canvas - new_w) // 2)


def letterbox(
    image: np.ndarray, boxes: np.ndarray, canvas: int, scaleup: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Aspect-preserving resize and centred padding with 114 to S x S (`letterbox_geometry`).

    Boxes scale by each axis's factor new / old, what the pixels were resized by (the
    reference's training and validation loads scale boxes so too; its `LetterBox` alone uses
    the one ratio of `letterbox_geometry` for both axes, up to half a resized pixel apart). A
    canvas box maps back to the input image as ((x1 - left) / sx, (y1 - top) / sy, ...).

    Args:
        image: uint8 [H, W, 3]; boxes: float32 [N, 4] xyxy pixels; canvas: S.
        scaleup: enlarge images smaller than the canvas (the reference's validation does not,
            after its load has made the longer side S already).

    Returns:
        (uint8 [S, S, 3], float32 [N, 4] canvas pixels, float32 [2] scale (sy, sx) = (new_h / H,
        new_w / W), int32 [2] size (new_h, new_w), int32 [2] offset (top, left)).
    """
    height, width = image.shape[:2]
    (new_h, new_w), (top, left) = letterbox_geometry(height, width, canvas, scaleup)
    out = np.full((canvas, canvas, 3), PAD_VALUE, np.uint8)
    out[top : top + new_h, left : left + new_w] = _resize(image, new_h, new_w)
    sy, sx = new_h / height, new_w / width
    moved = np.asarray(boxes, np.float64).reshape(-1, 4) * (sx, sy, sx, sy) + (left, top) * 2
    return (
        out,
        moved.astype(np.float32),
        np.array([sy, sx], np.float32),
        np.array([new_h, new_w], np.int32),
        np.array([top, left], np.int32),
    )


# ---------------------------------------------------------------------------------------------
# mosaic


def mosaic_layout(
    shapes: Sequence[tuple[int, int]], canvas: int, centre: tuple[int, int]
) -> list[tuple[tuple[int, int, int, int], tuple[int, int]]]:
    """Where 4 images go on the 2S x 2S mosaic canvas around `centre` = (xc, yc).

    Image 0's bottom-right corner sits at the centre, image 1's bottom-left, image 2's
    top-right, image 3's top-left; each is cut where the canvas ends.

    Args:
        shapes: 4 (h, w) image sizes; canvas: S; centre: (xc, yc) in [0, 2S].

    Returns:
        Per image, (the canvas window (x1, y1, x2, y2), the image's offset (dx, dy) on the
        canvas: image pixel (x, y) lands at (x + dx, y + dy)).
    """
    xc, yc = centre
    side = 2 * canvas
    layout = []
    for i, (h, w) in enumerate(shapes):
        left, top = (xc - w if i in (0, 2) else xc), (yc - h if i in (0, 1) else yc)
        window = (max(left, 0), max(top, 0), min(left + w, side), min(top + h, side))
        layout.append((window, (left, top)))
    return layout


def mosaic_centre(canvas: int, rng: np.random.Generator) -> tuple[int, int]:
    """(xc, yc), each an int drawn uniformly from the 2S canvas less the reference's border of
    -S // 2 (floor division) on each side: [ceil(S / 2), 2S - ceil(S / 2)), truncated."""
    low, high = -(-canvas // 2), 2 * canvas + (-canvas // 2)
    xc, yc = (int(rng.uniform(low, high)) for _ in range(2))
    return xc, yc


def mosaic(
    images: Sequence[np.ndarray], fields: Sequence[dict], canvas: int, centre: tuple[int, int]
) -> tuple[np.ndarray, dict]:
    """The 4 images on a 2S x 2S canvas of 114 around `centre` (`mosaic_layout`).

    Args:
        images: 4 uint8 [h_i, w_i, 3]; fields: their per-box fields (`boxes` [n_i, 4] pixels).
        canvas: S; centre: (xc, yc), e.g. `mosaic_centre`.

    Returns:
        (uint8 [2S, 2S, 3], the fields concatenated with boxes in canvas pixels, clipped to it,
        boxes without area dropped).
    """
    xc, yc = centre
    out = np.full((2 * canvas, 2 * canvas, 3), PAD_VALUE, np.uint8)
    moved = []
    shapes = [image.shape[:2] for image in images]
    for image, part, ((x1, y1, x2, y2), (dx, dy)) in zip(
        images, fields, mosaic_layout(shapes, canvas, (xc, yc)), strict=True
    ):
        out[y1:y2, x1:x2] = image[y1 - dy : y2 - dy, x1 - dx : x2 - dx]
        moved.append({**part, "boxes": part["boxes"] + np.array([dx, dy, dx, dy], np.float32)})
    joined = {k: np.concatenate([m[k] for m in moved]) for k in moved[0]}
    boxes = np.clip(joined["boxes"], 0, 2 * canvas)
    joined["boxes"] = boxes
    return out, take(joined, (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)


# ---------------------------------------------------------------------------------------------
# random affine


def affine_matrix(
    rng: np.random.Generator,
    input_shape: tuple[int, int],
    output_size: int,
    degrees: float = 0.0,
    translate: float = 0.1,
    scale: float = 0.5,
    shear: float = 0.0,
    perspective: float = 0.0,
) -> tuple[np.ndarray, float]:
    """The reference's random affine (or projective) map, drawn from `rng`.

    Composed as T @ S @ R @ P @ C: C moves the input's centre to the origin, P perspective
    (+-`perspective`), R rotation by +-`degrees` (counter-clockwise on screen) and scale
    s in [1 - scale, 1 + scale], S shear (+-`shear` degrees per axis), T puts the centre at
    (0.5 +- translate) * output_size per axis.

    Args:
        input_shape: (H, W); output_size: S.

    Returns:
        (float64 [3, 3] mapping input (x, y, 1) to output pixels, s).
    """
    centre = np.eye(3)
    centre[:2, 2] = -input_shape[1] / 2, -input_shape[0] / 2
    project = np.eye(3)
    project[2, :2] = rng.uniform(-perspective, perspective, 2)
    angle = math.radians(rng.uniform(-degrees, degrees))
    s = float(rng.uniform(1 - scale, 1 + scale))
    rotate = np.eye(3)
    rotate[:2, :2] = s * np.array(
        [[math.cos(angle), math.sin(angle)], [-math.sin(angle), math.cos(angle)]]
    )
    skew = np.eye(3)
    skew[0, 1], skew[1, 0] = np.tan(np.radians(rng.uniform(-shear, shear, 2)))
    move = np.eye(3)
    move[:2, 2] = rng.uniform(0.5 - translate, 0.5 + translate, 2) * output_size
    return move @ skew @ rotate @ project @ centre, s


def warp(image: np.ndarray, matrix: np.ndarray, output_size: int) -> np.ndarray:
    """The image under `matrix` (input -> output pixels, [3, 3]) on S x S, bilinear, border 114.

    PIL takes the inverse map; an affine one as 6 numbers, a projective one as 8 (normalised).
    """
    inverse = np.linalg.inv(matrix)
    if np.allclose(matrix[2], (0.0, 0.0, 1.0)):
        method, data = Image.Transform.AFFINE, inverse[:2].reshape(-1)
    else:
        method, data = Image.Transform.PERSPECTIVE, (inverse / inverse[2, 2]).reshape(-1)[:8]
    pil = Image.fromarray(image).transform(
        (output_size, output_size),
        method,
        tuple(float(v) for v in data),
        resample=Image.Resampling.BILINEAR,
        fillcolor=(PAD_VALUE,) * 3,
    )
    return np.asarray(pil)


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """float [N, 4] xyxy -> the bounds of their 4 corners under `matrix` ([3, 3]), [N, 4]."""
    corners = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(-1, 4, 2).astype(np.float64)
    points = np.concatenate([corners, np.ones((*corners.shape[:2], 1))], -1) @ matrix.T
    xy = points[..., :2] / points[..., 2:]
    return np.concatenate([xy.min(1), xy.max(1)], -1).reshape(-1, 4)


def box_candidates(
    before: np.ndarray,
    after: np.ndarray,
    min_side: float = 2.0,
    max_aspect: float = 100.0,
    min_area_ratio: float = 0.1,
    eps: float = 1e-16,
) -> np.ndarray:
    """The reference's filter of augmented boxes: keep a box whose width and height both exceed
    `min_side` px, whose area is more than `min_area_ratio` of `before`'s, and whose aspect
    (longer over shorter side) is under `max_aspect`.

    Args:
        before: [N, 4] xyxy, the boxes before augmentation at the augmentation's scale.
        after: [N, 4] xyxy, the augmented, clipped boxes.

    Returns:
        bool [N].
    """
    w1, h1 = before[:, 2] - before[:, 0], before[:, 3] - before[:, 1]
    w2, h2 = after[:, 2] - after[:, 0], after[:, 3] - after[:, 1]
    aspect = np.maximum(w2 / (h2 + eps), h2 / (w2 + eps))
    return (
        (w2 > min_side)
        & (h2 > min_side)
        & (w2 * h2 / (w1 * h1 + eps) > min_area_ratio)
        & (aspect < max_aspect)
    )


def random_affine(
    image: np.ndarray, fields: dict, rng: np.random.Generator, output_size: int, **ranges
) -> tuple[np.ndarray, dict, float]:
    """`affine_matrix` drawn and applied to the image (`warp`) and its boxes (`affine_boxes`).

    `ranges`: affine_matrix's degrees, translate, scale, shear, perspective.

    Returns:
        (uint8 [S, S, 3], the kept fields with boxes in output pixels, s).
    """
    matrix, s = affine_matrix(rng, image.shape[:2], output_size, **ranges)
    return warp(image, matrix, output_size), affine_boxes(fields, matrix, s, output_size), s


def affine_boxes(fields: dict, matrix: np.ndarray, s: float, output_size: int) -> dict:
    """The boxes under `matrix` ([3, 3]; `transform_boxes`), clipped to the S x S output and
    filtered by `box_candidates` against the input boxes times `s`, the map's scale.

    Returns:
        The kept rows of `fields`, `boxes` in output pixels and `area` times s^2 and the share
        of the transformed box the clipping kept.
    """
    boxes = fields["boxes"].astype(np.float64)
    moved = transform_boxes(boxes, matrix)
    clipped = np.clip(moved, 0, output_size)
    whole = (moved[:, 2] - moved[:, 0]) * (moved[:, 3] - moved[:, 1])
    kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    share = kept / np.maximum(whole, 1e-9)
    out = {
        **fields,
        "boxes": clipped.astype(np.float32),
        "area": (fields["area"] * s * s * share).astype(np.float32),
    }
    return take(out, box_candidates(boxes * s, clipped))


# ---------------------------------------------------------------------------------------------
# colour and flips


def hsv_jitter(
    image: np.ndarray, rng: np.random.Generator, gains: tuple[float, float, float]
) -> np.ndarray:
    """`shift_hsv` by r uniform in +-gains (per channel, per image); all gains 0: the image
    unchanged (no HSV round trip).

    Args:
        image: uint8 [H, W, 3] RGB; gains: (hue, saturation, value).

    Returns:
        uint8 [H, W, 3].
    """
    if not any(gains):
        return image
    return shift_hsv(image, rng.uniform(-1, 1, 3) * np.asarray(gains, np.float64))


def shift_hsv(image: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Hue turned by r[0] of the colour circle, saturation and value times 1 + r[1], 1 + r[2]
    (clipped to 0..255, truncated like the reference's lookup tables); zero saturation stays
    zero, so greys and white stay uncoloured.

    Args:
        image: uint8 [H, W, 3] RGB; r: float [3].

    Returns:
        uint8 [H, W, 3].
    """
    x = np.arange(256, dtype=np.float64)
    hue = np.mod(x + r[0] * 256, 256).astype(np.uint8)
    saturation = np.clip(x * (1 + r[1]), 0, 255).astype(np.uint8)
    saturation[0] = 0
    value = np.clip(x * (1 + r[2]), 0, 255).astype(np.uint8)
    hsv = np.asarray(Image.fromarray(image).convert("HSV"))
    # Per-channel lookup in numpy: PIL's point() rounds its 768 table entries in Python.
    shifted = np.stack([hue[hsv[..., 0]], saturation[hsv[..., 1]], value[hsv[..., 2]]], -1)
    return np.asarray(Image.fromarray(shifted, "HSV").convert("RGB"))


def flip_boxes(boxes: np.ndarray, extent: int, axis: int) -> np.ndarray:
    """Mirror boxes [N, 4] xyxy on an image `extent` px wide (axis 0: x) or tall (axis 1: y)."""
    flipped = boxes.copy()
    flipped[:, axis] = extent - boxes[:, axis + 2]
    flipped[:, axis + 2] = extent - boxes[:, axis]
    return flipped
