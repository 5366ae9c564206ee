"""RandAugment and random erasing on the host: numpy + PIL, per example, uint8 in, uint8 out.

Like `transforms`, every random choice comes from the `np.random.Generator` passed in, so an
example's augmentation is fixed by that generator's seed.

RandAugment (Cubuk et al. 2019) uses timm's op set, the one big_vision's `randaug` draws from
minus Cutout (use `random_erasing` for that): AutoContrast, Equalize, Invert, Rotate, Posterize,
Solarize, SolarizeAdd, Color, Contrast, Brightness, Sharpness, ShearX, ShearY, TranslateX,
TranslateY. Magnitudes follow timm's "increasing" variant (`rand-m9-mstd0.5-inc1`, as in DeiT),
where a larger magnitude is always a stronger distortion and magnitude 0 leaves the image as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# Geometric ops fill the pixels they uncover with mid grey, as big_vision does.
FILL = 128
_RESAMPLE = Image.Resampling.BILINEAR


def _affine(img: Image.Image, matrix: tuple[float, ...]) -> Image.Image:
    """Output pixel (x, y) samples input (a x + b y + c, d x + e y + f), matrix = (a..f)."""
    fill = FILL if img.mode == "L" else (FILL,) * 3
    return img.transform(img.size, Image.Transform.AFFINE, matrix, _RESAMPLE, fillcolor=fill)


def _rotate(img: Image.Image, level: float) -> Image.Image:
    fill = FILL if img.mode == "L" else (FILL,) * 3
    return img.rotate(30.0 * level, _RESAMPLE, fillcolor=fill)


def _shear_x(img: Image.Image, level: float) -> Image.Image:
    return _affine(img, (1, 0.3 * level, 0, 0, 1, 0))


def _shear_y(img: Image.Image, level: float) -> Image.Image:
    return _affine(img, (1, 0, 0, 0.3 * level, 1, 0))


def _translate_x(img: Image.Image, level: float) -> Image.Image:
    # A share of the width rather than big_vision's fixed 100 pixels (0.45 x 224), so the op
    # means the same at every resolution.
    return _affine(img, (1, 0, 0.45 * level * img.size[0], 0, 1, 0))


def _translate_y(img: Image.Image, level: float) -> Image.Image:
    return _affine(img, (1, 0, 0, 0, 1, 0.45 * level * img.size[1]))


def _posterize(img: Image.Image, level: float) -> Image.Image:
    # Keeps 8 bits at level 0 down to 4 at level 1: the paper's range, made increasing. (timm's
    # increasing posterize goes down to 0 bits, a black image.)
    bits = 8 - int(4 * abs(level))
    return img if bits >= 8 else ImageOps.posterize(img, bits)


def _solarize(img: Image.Image, level: float) -> Image.Image:
    # Inverts pixels >= threshold: 256 (none) at level 0, 0 (all) at level 1.
    return ImageOps.solarize(img, 256 - int(256 * abs(level)))


def _solarize_add(img: Image.Image, level: float) -> Image.Image:
    # Brightens only the dark half (pixels < 128) by up to 110.
    add = int(110 * abs(level))
    # A lookup table per band: PIL applies it in one pass over the pixels.
    lut = [min(v + add, 255) if v < 128 else v for v in range(256)]
    return img.point(lut * len(img.getbands()))


def _enhance(enhancer: type) -> Callable[[Image.Image, float], Image.Image]:
    # Factor 1 is the identity; 0 is the degenerate image (grey, flat, black or blurred) and 2
    # extrapolates past the original.
    def op(img: Image.Image, level: float) -> Image.Image:
        return enhancer(img).enhance(1.0 + 0.9 * level)

    return op


def _identity_level(op: Callable[[Image.Image], Image.Image]):
    def wrapped(img: Image.Image, level: float) -> Image.Image:
        del level  # these ops have no strength
        return op(img)

    return wrapped


# name -> op(img, level) with level in [-1, 1] (magnitude / max_magnitude, signed).
OPS: dict[str, Callable[[Image.Image, float], Image.Image]] = {
    "AutoContrast": _identity_level(ImageOps.autocontrast),
    "Equalize": _identity_level(ImageOps.equalize),
    "Invert": _identity_level(ImageOps.invert),
    "Rotate": _rotate,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": _enhance(ImageEnhance.Color),
    "Contrast": _enhance(ImageEnhance.Contrast),
    "Brightness": _enhance(ImageEnhance.Brightness),
    "Sharpness": _enhance(ImageEnhance.Sharpness),
    "ShearX": _shear_x,
    "ShearY": _shear_y,
    "TranslateX": _translate_x,
    "TranslateY": _translate_y,
}
# Ops whose level gets a random sign (rotate either way, brighten or darken, ...); the others
# use |level|.
SIGNED_OPS = frozenset(
    {"Rotate", "Color", "Contrast", "Brightness", "Sharpness"}
    | {"ShearX", "ShearY", "TranslateX", "TranslateY"}
)
RAND_AUGMENT_OPS = tuple(OPS)


def _to_pil(image: np.ndarray) -> Image.Image:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"expected uint8 [H, W, 1 or 3], got {image.dtype} {image.shape}")
    return Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image)


def _from_pil(img: Image.Image, channels: int) -> np.ndarray:
    out = np.asarray(img)
    return out.reshape(*out.shape[:2], channels)


def apply_op(image: np.ndarray, name: str, level: float) -> np.ndarray:
    """Applies one RandAugment op at a fixed strength.

    Args:
        image: uint8 [H, W, C], C = 1 or 3.
        name: a key of `OPS`.
        level: strength in [-1, 1]; ops not in `SIGNED_OPS` use `|level|`.

    Returns:
        uint8 [H, W, C].
    """
    return _from_pil(OPS[name](_to_pil(image), level), image.shape[2])


def rand_augment(
    image: np.ndarray,
    rng: np.random.Generator,
    num_ops: int = 2,
    magnitude: float = 10,
    max_magnitude: float = 10,
    *,
    magnitude_std: float = 0.0,
    op_prob: float = 0.5,
    ops: Sequence[str] = RAND_AUGMENT_OPS,
) -> np.ndarray:
    """RandAugment: `num_ops` ops drawn uniformly (with replacement) from `ops`, in sequence.

    Each op runs at level `magnitude / max_magnitude`, with a random sign for `SIGNED_OPS`.
    At level 1: Rotate 30 degrees, Shear 0.3, Translate 45% of the side, Posterize to 4 bits,
    Solarize every pixel, SolarizeAdd +110 below 128, Color/Contrast/Brightness/Sharpness
    factor 1 +- 0.9.

    Args:
        image: uint8 [H, W, C], C = 1 or 3.
        rng: the only source of randomness.
        num_ops: ops applied per image (the paper's N).
        magnitude: the paper's M, on a scale of `max_magnitude`.
        max_magnitude: the magnitude of the strongest distortion (10 in timm and big_vision).
        magnitude_std: > 0 draws each op's magnitude from N(magnitude, std), inf from
            U(0, magnitude), both clipped to [0, max_magnitude] (timm's `mstd`).
        op_prob: each drawn op runs with this probability (timm: 0.5; the paper: 1.0).
        ops: the names (keys of `OPS`) to draw from.

    Returns:
        uint8 [H, W, C].
    """
    channels = image.shape[2]
    img = _to_pil(image)
    for _ in range(num_ops):
        # Every op draws the same numbers whether or not it runs, so skipping one does not
        # change what the next one draws.
        name = ops[int(rng.integers(len(ops)))]
        apply, negate, uniform = rng.random(3)
        gauss = rng.standard_normal() if 0 < magnitude_std < float("inf") else 0.0
        if apply >= op_prob:
            continue
        m = magnitude
        if magnitude_std == float("inf"):
            m = uniform * magnitude
        elif magnitude_std > 0:
            m = magnitude + magnitude_std * gauss
        level = min(max(m, 0.0), max_magnitude) / max_magnitude
        if name in SIGNED_OPS and negate < 0.5:
            level = -level
        img = OPS[name](img, level)
    return _from_pil(img, channels)


ERASE_MODES = ("pixel", "channel", "const")


def random_erasing(
    image: np.ndarray,
    rng: np.random.Generator,
    probability: float = 0.25,
    area_range: tuple[float, float] = (0.02, 1 / 3),
    aspect_range: tuple[float, float] = (0.3, 3.3),
    mode: str = "pixel",
) -> np.ndarray:
    """Random erasing (Zhong et al. 2017, timm's `RandomErasing` with one box).

    With `probability`, tries up to 10 boxes of area fraction uniform in `area_range` and aspect
    ratio (height / width) log-uniform in `aspect_range`, and fills the first that fits.
    Note that timm erases after normalisation, so its "const" zeros are the mean colour and its
    "pixel" noise is N(mean, std); here, before normalisation, "const" is black and "pixel" is
    uniform over 0..255.

    Args:
        image: uint8 [H, W, C].
        rng: the only source of randomness.
        mode: "pixel" (uniform noise per pixel and channel), "channel" (one random colour),
            "const" (zeros).

    Returns:
        uint8 [H, W, C]; the input itself when nothing is erased.
    """
    if mode not in ERASE_MODES:
        raise ValueError(f"unknown erasing mode {mode!r}: use one of {', '.join(ERASE_MODES)}")
    if rng.random() >= probability:
        return image
    height, width, channels = image.shape
    log_lo, log_hi = np.log(aspect_range[0]), np.log(aspect_range[1])
    for _ in range(10):
        target_area = height * width * rng.uniform(*area_range)
        aspect = np.exp(rng.uniform(log_lo, log_hi))
        h = round(np.sqrt(target_area * aspect))
        w = round(np.sqrt(target_area / aspect))
        if 0 < h < height and 0 < w < width:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            if mode == "pixel":
                fill = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            elif mode == "channel":
                fill = rng.integers(0, 256, (1, 1, channels), dtype=np.uint8)
            else:
                fill = 0
            out = image.copy()
            out[top : top + h, left : left + w] = fill
            return out
    return image
