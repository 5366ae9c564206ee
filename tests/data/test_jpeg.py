"""JPEG crops decoded from the header size at a reduced DCT scale: same boxes, same or nearly the
same pixels as decoding the whole image, and the same failures."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from jaxvision.data import (
    TrainTransform,
    files,
    inception_crop,
    jpeg,
    resize_center_crop,
    train_batches,
    transforms,
)
from jaxvision.errors import UserError


def _photo(height, width, seed=0):
    """Photo-like pixels: a smooth colour field plus mild noise (compresses like a photo)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.int16)
    return np.clip(smooth + rng.integers(-12, 13, (height, width, 3)), 0, 255).astype(np.uint8)


def _save(tmp_path, pixels, name="a.jpg", **kwargs):
    path = str(tmp_path / name)
    Image.fromarray(pixels).save(path, **kwargs)
    return path


@pytest.fixture(scope="module")
def big_jpeg(tmp_path_factory):
    path = _save(tmp_path_factory.mktemp("big"), _photo(1200, 1600), quality=90)
    return path, files.load_image(path)


@pytest.mark.parametrize(
    "options",
    [{}, {"progressive": True}, {"subsampling": 0}, {"subsampling": 1}, {"quality": 60}],
)
def test_open_image_reads_the_size_from_the_header_and_decodes_like_pil(tmp_path, options):
    path = _save(tmp_path, _photo(75, 100), **{"quality": 90, **options})
    image = jpeg.open_image(path)
    assert isinstance(image, jpeg.JpegImage) and image.shape == (75, 100, 3)
    # simplejpeg's libjpeg-turbo decodes to the bytes PIL's does (4:2:0, progressive, 4:4:4,
    # 4:2:2), so a JPEG's crop does not depend on which of the two decoded it.
    np.testing.assert_array_equal(np.asarray(image), files.load_image(path))


def test_crops_of_a_500x375_jpeg_equal_the_decoded_path_exactly(tmp_path):
    # At 224 no crop of a 500x375 image can be decoded smaller (each side is < 448), so the
    # header-sized box and the whole-image decode give the very same pixels.
    path = _save(tmp_path, _photo(375, 500), quality=90)
    pixels = files.load_image(path)
    for seed in range(12):
        ours = inception_crop(jpeg.open_image(path), 224, np.random.default_rng(seed))
        before = inception_crop(pixels, 224, np.random.default_rng(seed))
        assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
        np.testing.assert_array_equal(ours, before)


def test_train_crops_stay_close_to_the_antialiased_resize(tmp_path):
    # The train crop resamples without antialiasing up to 2x (transforms' docstring): bound how
    # far that moves it from PIL's antialiased resize of the same box, scale by scale.
    pixels = files.load_image(_save(tmp_path, _photo(375, 500), quality=90))
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(40):
        box = transforms.inception_box(375, 500, rng)
        ours = transforms.train_resize(pixels, 224, box).astype(np.int16)
        diff = np.abs(ours - transforms._resize(pixels, 224, box).astype(np.int16))
        scale = max(box[2] - box[0], box[3] - box[1]) / 224
        if scale <= 1:  # the same filter: rounding, and the box's edge repeated by OpenCV
            assert diff.mean() < 0.3 and diff[2:-2, 2:-2].max() <= 1 and diff.max() <= 10
            seen.add("up")
        elif scale <= 2:  # no antialiasing: measured means 0.4-1.6, maxima up to 15
            assert diff.mean() < 2.0 and diff.max() <= 24
            seen.add("down")
        else:  # PIL's filter itself
            assert diff.max() == 0
            seen.add("antialiased")
    assert seen == {"up", "down", "antialiased"}


@pytest.mark.parametrize(
    "box, size, divisor",
    [
        ((0, 0, 1600, 1200), 100, 8),
        ((0, 0, 1600, 1200), 224, 4),
        ((100, 50, 1100, 1000), 224, 4),
        ((10, 20, 500, 600), 224, 2),
        ((33.25, 41.5, 1000.5, 1190.75), 224, 4),
        ((700, 500, 950, 760), 224, 1),
    ],
)
def test_downscaled_decode_stays_close_to_the_full_decode(big_jpeg, box, size, divisor):
    path, pixels = big_jpeg
    assert jpeg.scale_divisor(box[2] - box[0], box[3] - box[1], size) == divisor
    pixels_d, box_d = jpeg.open_image(path).decode_box(box, size)
    ours = transforms._resize(pixels_d, size, box_d).astype(np.int16)
    full = transforms._resize(pixels, size, box).astype(np.int16)
    assert ours.shape == (size, size, 3)
    diff = np.abs(ours - full)
    if divisor == 1:
        np.testing.assert_array_equal(ours, full)
    # Measured 0.30-0.64 mean and 2-4 max on this image; the bound leaves room for other
    # libjpeg-turbo builds, and a wrong box or scale would be tens of levels off.
    assert diff.mean() < 1.0 and diff.max() <= 12
    # The train crop's own resize of the reduced decode (plain bilinear, the box now at most
    # 2x the size) against the antialiased resize of the full decode: measured 0.37-0.80 mean.
    train = transforms.train_resize(jpeg.open_image(path), size, box).astype(np.int16)
    diff = np.abs(train - full)
    assert diff.mean() < 1.2 and diff.max() <= 16


def test_scale_divisor_keeps_the_crop_at_least_the_output_size():
    assert jpeg.scale_divisor(447, 1000, 224) == 1
    assert jpeg.scale_divisor(448, 448, 224) == 2
    assert jpeg.scale_divisor(896, 900, 224) == 4
    assert jpeg.scale_divisor(1792, 5000, 224) == 8
    assert jpeg.scale_divisor(5000, 5000, 224) == 8  # no scale past 1/8


def test_eval_center_crop_of_a_jpeg(big_jpeg, tmp_path):
    path, pixels = big_jpeg
    # 1200 * 0.875 = 1050 -> 1/4 scale: close to the full decode.
    diff = np.abs(
        resize_center_crop(jpeg.open_image(path), 224).astype(np.int16)
        - resize_center_crop(pixels, 224).astype(np.int16)
    )
    assert diff.mean() < 1.0
    # Natural size, no resampling: a plain crop of the decoded pixels.
    small = _save(tmp_path, _photo(64, 80), quality=90)
    np.testing.assert_array_equal(
        resize_center_crop(jpeg.open_image(small), 56), files.load_image(small)[4:60, 12:68]
    )


def test_grayscale_jpeg_becomes_rgb(tmp_path):
    path = _save(tmp_path, _photo(60, 90)[:, :, 0], quality=90)
    image = jpeg.open_image(path)
    assert isinstance(image, jpeg.JpegImage)
    np.testing.assert_array_equal(np.asarray(image), files.load_image(path))
    out = inception_crop(image, 32, np.random.default_rng(0))
    assert out.shape == (32, 32, 3) and (out[..., 0] == out[..., 2]).all()


def test_png_keeps_the_decoded_path(tmp_path):
    png = _save(tmp_path, _photo(30, 40), "a.png")
    out = jpeg.open_image(png)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, files.load_image(png))
    np.testing.assert_array_equal(
        inception_crop(out, 16, np.random.default_rng(2)),
        inception_crop(files.load_image(png), 16, np.random.default_rng(2)),
    )


def test_cmyk_jpeg_converts_as_before(tmp_path):
    path = str(tmp_path / "cmyk.jpg")
    Image.fromarray(_photo(30, 40)).convert("CMYK").save(path, quality=90)
    image = jpeg.open_image(path)
    assert isinstance(image, jpeg.JpegImage)
    np.testing.assert_array_equal(np.asarray(image), files.load_image(path))
    np.testing.assert_array_equal(
        inception_crop(image, 16, np.random.default_rng(4)),
        inception_crop(files.load_image(path), 16, np.random.default_rng(4)),
    )


def _corrupt(tmp_path, pixels):
    """A JPEG whose header reads but whose entropy-coded data is cut off."""
    whole = _save(tmp_path, pixels, "whole.jpg", quality=90)
    with open(whole, "rb") as f:
        data = f.read()
    path = str(tmp_path / "cut.jpg")
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])
    return path


def test_corrupt_jpeg_gives_the_same_error_as_before(tmp_path):
    path = _corrupt(tmp_path, _photo(375, 500))
    image = jpeg.open_image(path)  # the header is whole: nothing decoded yet
    assert image.shape == (375, 500, 3)
    with pytest.raises(UserError) as before:
        files.load_image(path)
    for decode in (
        lambda: inception_crop(image, 224, np.random.default_rng(0)),
        lambda: np.asarray(image),
    ):
        with pytest.raises(UserError) as ours:
            decode()
        assert str(ours.value) == str(before.value)
        assert str(ours.value).startswith(f"cannot decode image {path} (")
        assert str(ours.value).endswith("remove or replace the file")


def test_not_a_jpeg_under_a_jpeg_name_gives_the_same_error(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_bytes(b"this is not an image")
    with pytest.raises(UserError, match="cannot decode image .*fake.jpg"):
        jpeg.open_image(str(path))


def test_recoverable_damage_decodes_as_pil_does(tmp_path):
    # Bytes overwritten inside the scan: PIL decodes them with a warning, and so do we.
    path = _save(tmp_path, _photo(75, 100), quality=90)
    data = bytearray(pathlib.Path(path).read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4] = b"\x00\x11\x22\x33"
    pathlib.Path(path).write_bytes(bytes(data))
    try:
        pixels = files.load_image(path)
    except UserError:
        pytest.skip("this damage is not recoverable for PIL either")
    image = jpeg.open_image(path)
    np.testing.assert_array_equal(np.asarray(image), pixels)
    np.testing.assert_array_equal(
        inception_crop(image, 32, np.random.default_rng(1)),
        inception_crop(pixels, 32, np.random.default_rng(1)),
    )


class _Files:
    def __init__(self, paths, lazy):
        self.paths, self.lazy = paths, lazy

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        load = jpeg.open_image if self.lazy else files.load_image
        return {"image": load(self.paths[i]), "label": i}


def test_train_batches_are_unchanged_by_lazy_jpegs(tmp_path):
    # 120x90 images at 64: every crop side is < 128, so scale 1 and exact equality; the mix
    # of JPEG and PNG checks both paths inside one batch.
    paths = [
        _save(tmp_path, _photo(90, 120, seed=i), f"{i}.{'png' if i % 3 == 0 else 'jpg'}")
        for i in range(12)
    ]
    transform = TrainTransform(64, crop="inception", flip=True)
    kwargs = dict(global_batch_size=6, seed=3, num_steps=3, start_step=1)
    lazy = list(train_batches(_Files(paths, True), transform, **kwargs))
    decoded = list(train_batches(_Files(paths, False), transform, **kwargs))
    assert len(lazy) == 3 and lazy[0]["image"].shape == (6, 64, 64, 3)
    for a, b in zip(lazy, decoded, strict=True):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
