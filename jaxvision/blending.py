"""Image blending: alpha blending and Laplacian-pyramid blending of two images.

Laplacian blending (Burt & Adelson 1983, "A multiresolution spline"): each image is split into
band-pass levels (a Laplacian pyramid), the mask into a Gaussian pyramid, every level is blended
with its own mask level, and the blended pyramid is collapsed. Coarse bands get a wide, soft
seam and fine bands a sharp one, so two images join without a visible edge or ghosting.

The pyramid uses Burt & Adelson's 5-tap kernel [1, 4, 6, 4, 1] / 16 with mirrored borders
(OpenCV's pyrDown / BORDER_REFLECT_101 conventions). Images are numpy uint8 [H, W, C] (or
float); work is in float64 on the host.
"""

import numpy as np
from scipy import ndimage

_KERNEL = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def _as_float(image) -> np.ndarray:
    image = np.asarray(image, np.float64)
    return image[:, :, None] if image.ndim == 2 else image


def _blur(image: np.ndarray, gain: float = 1.0) -> np.ndarray:
    """The separable 5-tap blur over H and W (`gain` per axis), mirrored borders."""
    out = ndimage.correlate1d(image, _KERNEL * gain, axis=0, mode="mirror")
    return ndimage.correlate1d(out, _KERNEL * gain, axis=1, mode="mirror")


def pyr_down(image: np.ndarray) -> np.ndarray:
    """[H, W, C] -> [ceil(H / 2), ceil(W / 2), C]: blur, then every second row and column."""
    return _blur(_as_float(image))[::2, ::2]


def pyr_up(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """[h, w, C] -> [H, W, C] with H in (2h - 1, 2h): zeros between the samples, then the blur
    with gain 2 per axis (the zeros' share of the energy)."""
    image = _as_float(image)
    up = np.zeros((*shape, image.shape[2]))
    up[::2, ::2] = image[: (shape[0] + 1) // 2, : (shape[1] + 1) // 2]
    return _blur(up, gain=2.0)


def max_levels(shape: tuple[int, ...], smallest: int = 8) -> int:
    """Pyramid levels until the coarsest side would drop below `smallest` pixels (>= 1)."""
    side, levels = min(shape[:2]), 1
    while (side + 1) // 2 >= smallest:
        side, levels = (side + 1) // 2, levels + 1
    return levels


def gaussian_pyramid(image, levels: int) -> list[np.ndarray]:
    """[image, pyr_down(image), ...]: `levels` float64 arrays, finest first."""
    pyramid = [_as_float(image)]
    for _ in range(levels - 1):
        pyramid.append(pyr_down(pyramid[-1]))
    return pyramid


def laplacian_pyramid(image, levels: int) -> list[np.ndarray]:
    """Band-pass levels G_i - pyr_up(G_{i+1}), finest first, and the coarsest Gaussian level
    last; `collapse` inverts it exactly."""
    gaussian = gaussian_pyramid(image, levels)
    bands = [
        g - pyr_up(coarser, g.shape[:2]) for g, coarser in zip(gaussian, gaussian[1:], strict=False)
    ]
    return bands + [gaussian[-1]]


def collapse(pyramid: list[np.ndarray]) -> np.ndarray:
    """The image a Laplacian pyramid came from (float64 [H, W, C])."""
    image = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        image = band + pyr_up(image, band.shape[:2])
    return image


def _to_like(image: np.ndarray, reference) -> np.ndarray:
    reference = np.asarray(reference)
    if reference.dtype == np.uint8:
        image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return image.reshape(reference.shape) if reference.ndim == 2 else image


def _check_pair(a, b, mask=None) -> None:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images to blend differ in shape: {a.shape} and {b.shape}")
    if mask is not None and np.asarray(mask).shape[:2] != a.shape[:2]:
        raise ValueError(f"mask of shape {np.asarray(mask).shape} does not cover {a.shape[:2]}")


def alpha_blend(a, b, alpha=0.5) -> np.ndarray:
    """alpha * a + (1 - alpha) * b; alpha a scalar or an [H, W] / [H, W, 1] map in [0, 1].
    Returns the inputs' dtype (uint8 rounded)."""
    _check_pair(a, b, None if np.isscalar(alpha) else alpha)
    alpha = np.asarray(alpha, np.float64)
    if alpha.ndim == 2:
        alpha = alpha[:, :, None]
    out = alpha * _as_float(a) + (1 - alpha) * _as_float(b)
    return _to_like(out, a)


def laplacian_blend(a, b, mask, levels: int | None = None) -> np.ndarray:
    """a where `mask` is 1, b where it is 0, joined band by band (module docstring).

    a, b: [H, W, C] (or [H, W]) images of the same shape; mask: [H, W] in [0, 1] (a bool mask
    works); levels: pyramid depth (default: down to about 8 pixels). Returns a's dtype.
    """
    _check_pair(a, b, mask)
    mask = _as_float(np.asarray(mask, np.float64))
    levels = levels or max_levels(np.asarray(a).shape)
    masks = gaussian_pyramid(mask, levels)
    pyramids = zip(masks, laplacian_pyramid(a, levels), laplacian_pyramid(b, levels), strict=True)
    bands = [m * la + (1 - m) * lb for m, la, lb in pyramids]
    return _to_like(collapse(bands), a)


def half_mask(shape: tuple[int, ...], direction: str = "vertical") -> np.ndarray:
    """[H, W] float: 1 on the left half ("vertical" seam) or the top half ("horizontal")."""
    height, width = shape[:2]
    mask = np.zeros((height, width))
    if direction == "vertical":
        mask[:, : width // 2] = 1
    elif direction == "horizontal":
        mask[: height // 2] = 1
    else:
        raise ValueError(f"unknown seam direction {direction!r}: use 'vertical' or 'horizontal'")
    return mask
