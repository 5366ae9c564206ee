"""Images from request bytes, checked before anything is decoded.

Only the formats in FORMATS are read (Pillow identifies them from the bytes, not the client's
name or type); the pixel count from the header is checked against a limit before decoding, so a
decompression bomb costs nothing; a truncated or corrupt file is refused, never padded.
"""

import io

import numpy as np
from PIL import Image

from jaxvision.data import files

FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")


class BadImage(Exception):
    """An upload that is not a readable image: (HTTP status, message)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def decode(data: bytes, *, channels: int, max_pixels: int, name: str = "image") -> np.ndarray:
    """uint8 [H, W, channels] from an encoded image's bytes; BadImage (400, 413, 415)."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.UnidentifiedImageError:
        raise BadImage(
            415, f"{name} is not an image in a supported format ({', '.join(FORMATS)})"
        ) from None
    except Image.DecompressionBombError:
        raise BadImage(413, f"{name} has more pixels than the server reads") from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(
            413, f"{name} is {width}x{height} pixels, over the server's limit of {max_pixels:,}"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(400, f"{name} is truncated or corrupt ({e})") from None
    try:  # as training decodes its files: 16-bit grayscale scaled, not clipped
        return files.to_uint8(image, channels)
    except ValueError as e:
        raise BadImage(415, f"{name} cannot be read: {e}") from None
