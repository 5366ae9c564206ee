"""JPEG files decoded only as far as a crop needs: size from the header, DCT-domain downscaling.

`open_image` reads a JPEG's header, not its pixels, and returns a `JpegImage`. The crops in
`transforms` draw their box from the header size (the same draws as for decoded pixels, so the
same box for the same seed and step), then `JpegImage.decode_box` has libjpeg-turbo (through
simplejpeg, straight into a numpy array) decode the image at the smallest of the scales 1/8,
1/4, 1/2 and 1 that keeps the crop at least `size` pixels on each side, and hands back the
pixels with the box in their coordinates; `transforms` resizes it.

Pixels: at scale 1 (every crop under 2 x `size` on a side, which is every crop of a 500x375
image at 224) they are `files.load_image`'s, byte for byte: PIL and simplejpeg both run
libjpeg-turbo with its accurate integer DCT and smooth chroma upsampling
(`tests/data/test_jpeg.py` checks baseline, progressive, 4:4:4 and grayscale files). At 1/2,
1/4 or 1/8 libjpeg-turbo reduces each 8x8 DCT block to 4x4, 2x2 or 1x1 pixels (an average over
the block, in the frequency domain) before the resize, in place of the full-size resize; the
crops then differ from a full decode by under 1 of 255 on average. CMYK and YCCK files, and any
file libjpeg-turbo warns about (damaged data, which simplejpeg rejects), are decoded by PIL as
`files.load_image` decodes them: the same pixels PIL recovers, the same one-line error.

Only the power-of-two scales are used: libjpeg-turbo's 3/8, 5/8, 3/4 and 7/8 have no SIMD code
and took 1.3-1.7x the time of a full decode here. A decode limited to the crop window (libjpeg's
`jpeg_crop_scanline` / `jpeg_skip_scanlines`, what TensorFlow's `decode_and_crop_jpeg` runs) is
not reachable from Python: no maintained binding installable as a wheel exposes it, and calling
libjpeg through ctypes cannot survive its error handler (`longjmp`). It would save little: on
500x375 JPEGs (~50 KB) the entropy decoding that no window skips is ~65% of a full decode (a
1/8-scale decode, which leaves out nearly all the rest, takes 0.43 ms of 0.67 ms), and
TensorFlow's cropped decode measured 1.15x its full decode on the average inception box.
"""

from __future__ import annotations

import io

import numpy as np
import simplejpeg
from PIL import Image

from jaxvision.data import files
from jaxvision.errors import UserError

# Downscale divisors tried, most reduction first (see the module docstring for why only these).
SCALE_DIVISORS = (8, 4, 2)
# Colour spaces simplejpeg converts to RGB exactly as PIL does (checked in the tests); PIL
# decodes the others (CMYK, YCCK), as `files.load_image` does.
_SIMPLEJPEG_COLORSPACES = frozenset({"YCbCr", "Gray"})


def scale_divisor(box_width: float, box_height: float, size: int) -> int:
    """The largest of `SCALE_DIVISORS` (or 1) that keeps a `box_width` x `box_height` crop at
    least `size` pixels on each side once the image is decoded at 1 / divisor."""
    if size < 8:
        # The image is then under 16 pixels: a 3/8 and a 1/2 decode could have the same size,
        # and the decoder might pick the wrong one.
        return 1
    for d in SCALE_DIVISORS:
        if box_width / d >= size and box_height / d >= size:
            return d
    return 1


class JpegImage:
    """A JPEG file not yet decoded: its bytes, and `shape` (H, W, 3) from its header.

    `np.asarray(image)` decodes it whole, exactly as `files.load_image` does (uint8 [H, W, 3],
    grayscale and CMYK converted to RGB); `decode_box` decodes at the scale a crop needs.
    """

    __slots__ = ("colorspace", "data", "path", "shape")
    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(
        self, data: bytes, height: int, width: int, path: str = "<bytes>", colorspace="YCbCr"
    ):
        self.data = data
        self.path = path
        self.shape = (height, width, 3)
        self.colorspace = colorspace

    def __repr__(self) -> str:
        return f"JpegImage({self.path!r}, shape={self.shape})"

    def __reduce__(self):
        return JpegImage, (self.data, *self.shape[:2], self.path, self.colorspace)

    def decode(self, divisor: int = 1) -> np.ndarray:
        """The image decoded at 1 / `divisor` (1, 2, 4 or 8): uint8 [ceil(H / d), ceil(W / d), 3].
        UserError with `files.load_image`'s message if it cannot be decoded."""
        height, width = self.shape[:2]
        expected = (-(-height // divisor), -(-width // divisor))
        if self.colorspace in _SIMPLEJPEG_COLORSPACES:
            try:
                pixels = simplejpeg.decode_jpeg(
                    self.data, colorspace="RGB", min_height=expected[0], min_width=expected[1]
                )
            except ValueError:
                pass  # damaged (simplejpeg is strict): PIL recovers what it can, or fails
            else:
                if pixels.shape[:2] == expected:
                    return pixels
        return self._decode_pil(divisor)

    def _decode_pil(self, divisor: int) -> np.ndarray:
        """`decode` through PIL, exactly as `files.load_image` at divisor 1."""
        try:
            with Image.open(io.BytesIO(self.data)) as image:
                if divisor > 1:
                    height, width = self.shape[:2]
                    # Asking for W // d x H // d makes Pillow pick exactly 1 / d.
                    image.draft(image.mode, (width // divisor, height // divisor))
                    expected = (-(-width // divisor), -(-height // divisor))
                    if image.size != expected:  # never seen; a wrong scale would move the crop
                        raise ValueError(f"decoded at {image.size}, expected {expected}")
                return files.to_uint8(image, 3)
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UserError(
                f"cannot decode image {self.path} ({e}): remove or replace the file"
            ) from None

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        pixels = self.decode()
        return pixels if dtype is None else pixels.astype(dtype)

    def decode_box(
        self, box: tuple[float, float, float, float], size: int
    ) -> tuple[np.ndarray, tuple[float, float, float, float]]:
        """The pixels a `size` x `size` resize of `box` = (left, top, right, bottom), in pixels
        of the full image, needs: (uint8 [h, w, 3] decoded at the scale `scale_divisor` picks,
        the box in those pixels' coordinates)."""
        divisor = scale_divisor(box[2] - box[0], box[3] - box[1], size)
        pixels = self.decode(divisor)
        if divisor > 1:
            box = tuple(v / divisor for v in box)
        return pixels, box


def open_jpeg(data: bytes, path: str = "<bytes>") -> JpegImage | None:
    """A `JpegImage` of `data` (its header read, its pixels not), or None when `data` is not a
    JPEG whose header libjpeg-turbo reads, or has more pixels than PIL accepts."""
    if not data.startswith(b"\xff\xd8\xff"):  # the start-of-image marker
        return None
    try:
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    # PIL refuses more than twice MAX_IMAGE_PIXELS (a decompression bomb): `files.load_image`
    # then gives its error.
    limit = Image.MAX_IMAGE_PIXELS
    if min(width, height) < 1 or (limit is not None and width * height > 2 * limit):
        return None
    return JpegImage(data, height, width, path, colorspace)


def open_image(path: str, channels: int = 3) -> JpegImage | np.ndarray:
    """`path` as the train and eval crops want it: a `JpegImage` for a JPEG wanted as RGB, else
    `files.load_image(path, channels)` (PNG, one channel, an unreadable header, ...). Damaged
    JPEG data fails when decoded, with the message `files.load_image` gives."""
    if channels == 3:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            data = b""  # missing, a folder, unreadable: `files.load_image` says which
        image = open_jpeg(data, path)
        if image is not None:
            return image
    return files.load_image(path, channels)
