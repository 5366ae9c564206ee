"""Image files: decoding them as the pipeline wants them, and telling the damaged ones apart.

`check_image_files` looks at what can be seen without decoding (the header, and the end of the
file, where a truncated JPEG lacks its end marker and a truncated PNG its IEND chunk), in
parallel, so a folder dataset names every unreadable file when it is opened rather than dying
on the first one mid-training.
"""

import concurrent.futures
import os
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxvision.errors import UserError

# 16-bit grayscale PNGs open in these modes; their values run to 65535 ("I": 32-bit integers,
# as Pillow opened them before version 10 and opens some TIFFs, read as 16-bit when in range).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I")
_TAIL_BYTES = 1024


def to_uint8(image: Image.Image, channels: int = 3) -> np.ndarray:
    """A PIL image as uint8 [H, W, channels]: the one decoding of image files' pixels (training,
    evaluation, the Predictor, the service). Palette, alpha and grayscale converted; 16-bit
    grayscale scaled to 0..255 (PIL's own conversion clips it, turning most pixels white).
    ValueError for pixels no scale fits: floating point, or integers outside 0..65535."""
    if image.mode == "F":
        raise ValueError("its pixels are 32-bit floats: save it with 8 or 16 bits per channel")
    if image.mode in _SIXTEEN_BIT_MODES:
        wide = np.asarray(image, dtype=np.int64)
        if wide.size and (wide.min() < 0 or wide.max() > 65535):
            raise ValueError(
                f"its pixels run from {wide.min()} to {wide.max()}, outside 16 bits: save it with "
                "8 or 16 bits per channel"
            )
        gray = (wide * 255 + 32767) // 65535  # round(v / 257), v in 0..65535
        image = Image.fromarray(gray.astype(np.uint8), mode="L")
    pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.uint8)
    return pixels[..., None] if pixels.ndim == 2 else pixels


def load_image(path: str, channels: int = 3) -> np.ndarray:
    """Decodes `path` to uint8 [H, W, channels]; UserError naming the file if it cannot."""
    if not os.path.isfile(path):
        raise UserError(f"image {path} not found: check the path")
    try:
        with Image.open(path) as image:
            return to_uint8(image, channels)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"cannot decode image {path} ({e}): remove or replace the file") from None


def _tail(path: str) -> bytes:
    with open(path, "rb") as f:
        f.seek(max(os.path.getsize(path) - _TAIL_BYTES, 0))
        return f.read()


def image_problem(path: str) -> str | None:
    """Why `path` cannot be used as an image, without decoding it, or None if it looks whole."""
    if not os.path.exists(path):
        return "broken link" if os.path.islink(path) else "missing"
    if os.path.getsize(path) == 0:
        return "empty file"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                kind, size = image.format, image.size
    except Image.DecompressionBombError:
        return f"more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels (a decompression bomb?)"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return "not an image"
    if kind == "JPEG" and b"\xff\xd9" not in _tail(path):
        return "truncated JPEG (no end marker)"
    if kind == "PNG" and b"IEND" not in _tail(path):
        return "truncated PNG (no IEND chunk)"
    if min(size) < 1:
        return "no pixels"
    return None


def check_image_files(paths: Sequence[str], workers: int = 16) -> dict[str, str]:
    """{path: problem} for every file of `paths` that cannot be used (`image_problem`)."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        problems = pool.map(image_problem, paths, chunksize=64)
        return {p: why for p, why in zip(paths, problems, strict=True) if why is not None}
