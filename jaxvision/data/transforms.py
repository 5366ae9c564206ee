"""Per-example image augmentation on the host: numpy + PIL, uint8 in, uint8 out.

Random transforms draw only from the `np.random.Generator` they are given, so an example's
augmentation is fixed by that generator's seed. Normalisation is left to the device.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


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


def inception_crop(
    image: np.ndarray,
    size: int,
    rng: np.random.Generator,
    area_range: tuple[float, float] = (0.08, 1.0),
    aspect_range: tuple[float, float] = (3 / 4, 4 / 3),
) -> np.ndarray:
    """Crops a random area and aspect ratio and resizes it to a square (RandomResizedCrop).

    Tries up to 10 random boxes with area in `area_range` (fraction of the image) and aspect
    ratio (width / height) log-uniform in `aspect_range`; if none fits, falls back to the largest
    central box whose aspect ratio is within `aspect_range`.

    Args:
        image: uint8 [H, W, C].
        size: output side length.
        rng: the only source of randomness.

    Returns:
        uint8 [size, size, C].
    """
    height, width = image.shape[:2]
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
            return _resize(image, size, (left, top, left + w, top + h))
    ratio = width / height
    if ratio < aspect_range[0]:
        w, h = width, round(width / aspect_range[0])
    elif ratio > aspect_range[1]:
        w, h = round(height * aspect_range[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return _resize(image, size, (left, top, left + w, top + h))


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
        image: uint8 [H, W, C].
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
        return image[top : top + size, left : left + size]
    top, left = (height - side) / 2, (width - side) / 2
    return _resize(image, size, (left, top, left + side, top + side))
