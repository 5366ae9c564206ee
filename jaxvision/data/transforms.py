"""Per-example image augmentation on the host: numpy + PIL + OpenCV, uint8 in, uint8 out.

Random transforms draw only from the `np.random.Generator` they are given, so an example's
augmentation is fixed by that generator's seed. Normalisation is left to the device.

Resampling: the eval resize (`resize_center_crop`) is PIL's antialiased bilinear filter, which
widens with the scale factor. The train crop (`inception_crop`) resizes its box with plain
bilinear interpolation (OpenCV, 2 taps per axis, as TensorFlow's default `resize` does) where
the box is at most 2x `size` on each side, and with PIL's antialiased filter above that; a JPEG
whose box is larger is first decoded at 1/2, 1/4 or 1/8 scale (`jpeg`), which leaves at most 2x
on the box's shorter side. Up to 1x (upscaling) both filters are the same triangle: the outputs
differ by rounding (0.22 of 255 on average, at most 1) except on the outermost pixels, where
OpenCV repeats the box's edge rather than reading past it (up to 7). From 1x to 2x the plain
filter skips the antialiasing, which moves pixels by 0.66 (1-1.5x) and 1.3 (1.5-2x) of 255 on
average, up to 15 on fine noise (256 crops of photo-like 500x375 JPEGs at 224; bounds in
`tests/data/test_jpeg.py`). A 224 crop of a 500x375 image took 0.13-0.20 ms (0.22 ms for a
fractional box) against 0.6-0.97 ms with PIL's filter, on one core of a 2-core EPYC VM.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from PIL import Image

# Largest scale factor (box side / output side) resized without antialiasing (see above).
LINEAR_MAX_SCALE = 2.0


def _resize(image: np.ndarray, size: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """Resizes the region `box` = (left, top, right, bottom) of `image` to `size` x `size`.

    Args:
        image: uint8 [H, W, C].

    Returns:
        uint8 [size, size, C]. PIL's bilinear filter widens with the scale factor, so
        downscaling is antialiased.
    """
    channels = image.shape[2]
    if channels in (1, 3):
        pil = Image.fromarray(image[:, :, 0] if channels == 1 else image)
        out = np.asarray(pil.resize((size, size), Image.Resampling.BILINEAR, box=box))
        return out.reshape(size, size, channels)
    # PIL has no mode for other channel counts: resize each channel on its own.
    return np.stack(
        [_resize(image[:, :, c : c + 1], size, box)[:, :, 0] for c in range(channels)], -1
    )


def _resize_linear(
    image: np.ndarray, size: int, box: tuple[float, float, float, float]
) -> np.ndarray:
    """`_resize` with plain bilinear interpolation (not antialiased), by OpenCV.

    Sample points as PIL's: output pixel x samples the input at left + (x + 0.5) * scale - 0.5.
    A box in whole pixels is resized as a view of the box (edge pixels repeated past it); one
    in fractions of a pixel (a box scaled with a reduced JPEG decode) through the inverse affine
    map, which reads the pixels next to the box as PIL does.

    Args:
        image: uint8 [H, W, C].

    Returns:
        uint8 [size, size, C].
    """
    channels = image.shape[2]
    if channels > 4:  # OpenCV's warp takes at most 4 channels
        return np.stack(
            [_resize_linear(image[:, :, c : c + 1], size, box)[:, :, 0] for c in range(channels)],
            -1,
        )
    if image.strides[1:] != (channels, 1):
        image = np.ascontiguousarray(image)  # OpenCV wants whole pixels next to each other
    left, top, right, bottom = box
    if all(float(v).is_integer() for v in box):
        window = image[int(top) : int(bottom), int(left) : int(right)]
        out = cv2.resize(window, (size, size), interpolation=cv2.INTER_LINEAR)
    else:
        scale_x, scale_y = (right - left) / size, (bottom - top) / size
        to_input = np.array(
            [[scale_x, 0, left + 0.5 * scale_x - 0.5], [0, scale_y, top + 0.5 * scale_y - 0.5]]
        )
        out = cv2.warpAffine(
            image,
            to_input,
            (size, size),
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return out.reshape(size, size, channels)


def _pixels_for(image, size: int, box: tuple[float, float, float, float]):
    """(pixels, box in their coordinates): decoded pixels as they are, an image not yet decoded
    (a `jpeg.JpegImage`) decoded at the scale a `size` x `size` resize of `box` needs."""
    if isinstance(image, np.ndarray):
        return image, box
    return image.decode_box(box, size)


def train_resize(image, size: int, box: tuple[float, float, float, float]) -> np.ndarray:
    """The region `box` = (left, top, right, bottom) of `image` resized to `size` x `size` as
    the train crop resizes it: plain bilinear up to `LINEAR_MAX_SCALE`, antialiased beyond (see
    the module docstring).

    Args:
        image: uint8 [H, W, C], or a `jpeg.JpegImage` (decoded at the scale the box needs).

    Returns:
        uint8 [size, size, C].
    """
    pixels, box = _pixels_for(image, size, box)
    if max(box[2] - box[0], box[3] - box[1]) <= LINEAR_MAX_SCALE * size:
        return _resize_linear(pixels, size, box)
    return _resize(pixels, size, box)


def inception_box(
    height: int,
    width: int,
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """The random box of `inception_crop` for a `height` x `width` image, as (left, top, right,
    bottom) in whole pixels. Draws from `rng` exactly what `inception_crop` draws."""
    area = height * width
    log_lo, log_hi = math.log(aspect_range[0]), math.log(aspect_range[1])
    for _ in range(10):
        target_area = area * rng.uniform(area_range[0], area_range[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    ratio = width / height
    if ratio < aspect_range[0]:
        w, h = width, round(width / aspect_range[0])
    elif ratio > aspect_range[1]:
        w, h = round(height * aspect_range[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return left, top, left + w, top + h


def inception_crop(
    image,
    size: int,
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Crops a random area and aspect ratio and resizes it to a square (RandomResizedCrop).

    Tries up to 10 random boxes with area in `area_range` (fraction of the image) and aspect
    ratio (width / height) log-uniform in `aspect_range`; if none fits, falls back to the largest
    central box whose aspect ratio is within `aspect_range` (`inception_box`).

    Args:
        image: uint8 [H, W, C], or a `jpeg.JpegImage` (the box is drawn from its header size,
            then only what the box needs is decoded: see `jaxvision.data.jpeg`).
        size: output side length.
        rng: the only source of randomness.

    Returns:
        uint8 [size, size, C].
    """
    height, width = image.shape[:2]
    box = inception_box(height, width, rng, area_range, aspect_range)
    return train_resize(image, size, box)


def pad_crop(image: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    """Pads with `pad` zero pixels on every side and crops back to the original size (CIFAR).

    Args:
        image: uint8 [H, W, C].

    Returns:
        uint8 [H, W, C], the image shifted by up to `pad` pixels in each direction.
    """
    height, width = image.shape[:2]
    # (dy, dx): where the output window starts in the padded image, minus `pad`.
    dy, dx = (int(v) - pad for v in rng.integers(0, 2 * pad + 1, size=2))
    # out[y, x] = image[y + dy, x + dx] where that exists, else 0. Copying the overlap avoids
    # building the padded image (np.pad costs ~30 us, which dominates small images).
    rows, cols = max(height - abs(dy), 0), max(width - abs(dx), 0)
    out = np.zeros_like(image)
    out_y, out_x = max(-dy, 0), max(-dx, 0)  # where the overlap lands in the output
    in_y, in_x = max(dy, 0), max(dx, 0)  # where it starts in the input
    out[out_y : out_y + rows, out_x : out_x + cols] = image[in_y : in_y + rows, in_x : in_x + cols]
    return out


def flip(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mirrors left-right with probability 0.5.

    Args:
        image: uint8 [H, W, C].

    Returns:
        uint8 [H, W, C].
    """
    return image[:, ::-1] if rng.random() < 0.5 else image


def resize_center_crop(image: np.ndarray, size: int, crop_ratio: float = 0.875) -> np.ndarray:
    """Resizes the shorter side to `size / crop_ratio`, then takes the central `size` square.

    Done as one resize of the matching central box of the input, which equals resize-then-crop
    without the intermediate image. An image that is already `size` x `size` with
    `crop_ratio=1.0` is returned unchanged.

    Args:
        image: uint8 [H, W, C], or a `jpeg.JpegImage` (decoded at the scale the crop needs).
        size: output side length.
        crop_ratio: share of the shorter side kept (0.875 is the usual ImageNet eval crop).

    Returns:
        uint8 [size, size, C].
    """
    height, width = image.shape[:2]
    side = min(height, width) * crop_ratio
    if side == size:
        # Same scale: a plain crop, no resampling (and no copy when the image is the crop).
        top, left = (height - size) // 2, (width - size) // 2
        return np.asarray(image)[top : top + size, left : left + size]
    top, left = (height - side) / 2, (width - side) / 2
    pixels, box = _pixels_for(image, size, (left, top, left + side, top + side))
    return _resize(pixels, size, box)


def center_crop_boxes(
    boxes: np.ndarray, height: int, width: int, size: int, crop_ratio: float = 0.875
) -> np.ndarray:
    """Boxes [k, 4] (xyxy pixels) of an image of `height` x `width`, moved to where
    `resize_center_crop(image, size, crop_ratio)` puts them: float32 [k, 4] in its output's
    pixels, clipped to it (a box outside the crop keeps zero area)."""
    side = min(height, width) * crop_ratio
    if side == size:  # resize_center_crop's plain crop, at whole-pixel offsets
        top, left, scale = (height - size) // 2, (width - size) // 2, 1.0
    else:
        top, left, scale = (height - side) / 2, (width - side) / 2, size / side
    moved = (np.asarray(boxes, np.float64).reshape(-1, 4) - (left, top, left, top)) * scale
    return np.clip(moved, 0, size).astype(np.float32)
