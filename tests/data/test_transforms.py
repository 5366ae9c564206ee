"""Host augmentation: shapes, dtypes, value ranges, determinism and exact crop/flip geometry."""

import math

import numpy as np
import pytest

from jaxvision.data import flip, inception_crop, pad_crop, resize_center_crop, transforms
from jaxvision.data.transforms import inception_box


def _image(height, width, channels, seed=0):
    return np.random.default_rng(seed).integers(10, 200, (height, width, channels), dtype=np.uint8)


@pytest.mark.parametrize("shape", [(50, 80, 3), (30, 20, 1), (8, 8, 1), (12, 9, 4)])
def test_inception_crop_shape_range_and_determinism(shape):
    image = _image(*shape)
    out = inception_crop(image, 16, np.random.default_rng(7))
    assert out.shape == (16, 16, shape[2]) and out.dtype == np.uint8
    # Bilinear weights are non-negative, so outputs stay within the input's range.
    assert image.min() <= out.min() and out.max() <= image.max()
    np.testing.assert_array_equal(out, inception_crop(image, 16, np.random.default_rng(7)))
    others = [inception_crop(image, 16, np.random.default_rng(s)) for s in range(8, 12)]
    assert any(not np.array_equal(out, o) for o in others)


def test_inception_crop_falls_back_to_center():
    image = _image(40, 40, 3)
    # No box can cover twice the image's area: all 10 tries fail and the whole (square) image
    # is resized.
    out = inception_crop(image, 24, np.random.default_rng(0), area_range=(2.0, 3.0))
    np.testing.assert_array_equal(out, transforms.train_resize(image, 24, (0, 0, 40, 40)))


def test_inception_crop_of_constant_image_is_constant():
    image = np.full((33, 47, 3), 77, np.uint8)
    out = inception_crop(image, 20, np.random.default_rng(1))
    assert (out == 77).all()


@pytest.mark.parametrize("pad", [0, 1, 4, 9])
def test_pad_crop_matches_pad_then_crop(pad):
    image = _image(8, 7, 3)
    for seed in range(30):
        out = pad_crop(image, np.random.default_rng(seed), pad)
        top, left = np.random.default_rng(seed).integers(0, 2 * pad + 1, size=2)
        expected = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))[top : top + 8, left : left + 7]
        assert out.dtype == np.uint8
        np.testing.assert_array_equal(out, expected)


def test_pad_crop_shifts_at_most_pad():
    image = np.zeros((32, 32, 1), np.uint8)
    image[16, 16] = 255
    positions = set()
    for seed in range(200):
        out = pad_crop(image, np.random.default_rng(seed), 4)
        (y,), (x,), _ = np.nonzero(out)
        positions.add((int(y), int(x)))
    assert positions <= {(y, x) for y in range(12, 21) for x in range(12, 21)}
    assert len(positions) > 40  # most of the 81 shifts occur


def test_flip_flips_exactly_half_the_time():
    image = _image(5, 6, 3)
    flipped = 0
    for seed in range(200):
        out = flip(image, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, flip(image, np.random.default_rng(seed)))
        if np.array_equal(out, image[:, ::-1]):
            flipped += 1
        else:
            np.testing.assert_array_equal(out, image)
    assert 70 <= flipped <= 130


def test_resize_center_crop_identity_at_natural_size():
    image = _image(8, 8, 1)
    out = resize_center_crop(image, 8, crop_ratio=1.0)
    np.testing.assert_array_equal(out, image)


def test_resize_center_crop_without_resampling_is_a_crop():
    # 64 * 0.875 = 56: the center box already has the output size, so no pixel is resampled.
    image = _image(64, 80, 3)
    np.testing.assert_array_equal(resize_center_crop(image, 56), image[4:60, 12:68])


@pytest.mark.parametrize("shape", [(50, 80, 3), (80, 50, 3), (300, 200, 1), (7, 9, 3)])
def test_resize_center_crop_shape_and_range(shape):
    image = _image(*shape)
    out = resize_center_crop(image, 16)
    assert out.shape == (16, 16, shape[2]) and out.dtype == np.uint8
    assert image.min() <= out.min() and out.max() <= image.max()


def test_resize_center_crop_keeps_the_center():
    # Left half dark, right half bright: a center crop of a wide image keeps both halves.
    image = np.zeros((40, 120, 1), np.uint8)
    image[:, 60:] = 200
    out = resize_center_crop(image, 20, crop_ratio=1.0)
    assert (out[:, :9] == 0).all() and (out[:, 11:] == 200).all()


def _box_before(height, width, rng, area_range=(0.08, 1.0), aspect_range=(3 / 4, 4 / 3)):
    """The box `inception_crop` drew before `inception_box` existed (its code, kept verbatim as
    the reference: a changed draw would change every resumed run's crops)."""
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
            return (left, top, left + w, top + h)
    ratio = width / height
    if ratio < aspect_range[0]:
        w, h = width, round(width / aspect_range[0])
    elif ratio > aspect_range[1]:
        w, h = round(height * aspect_range[1]), height
    else:
        w, h = width, height
    top, left = (height - h) // 2, (width - w) // 2
    return (left, top, left + w, top + h)


@pytest.mark.parametrize(
    "height, width, area_range",
    [(375, 500, (0.08, 1.0)), (500, 333, (0.08, 1.0)), (7, 9, (0.08, 1.0)), (40, 90, (0.9, 1.0))],
)
def test_inception_box_draws_the_same_boxes_as_before(height, width, area_range):
    for seed in range(200):
        ours, before = np.random.default_rng(seed), np.random.default_rng(seed)
        box = inception_box(height, width, ours, area_range)
        assert box == _box_before(height, width, before, area_range)
        assert ours.random() == before.random()  # and leaves the generator where it was
        left, top, right, bottom = box
        assert 0 <= left < right <= width and 0 <= top < bottom <= height


def test_inception_crop_resizes_the_inception_box():
    image = _image(50, 80, 3)
    for seed in range(5):
        box = _box_before(50, 80, np.random.default_rng(seed))
        np.testing.assert_array_equal(
            inception_crop(image, 16, np.random.default_rng(seed)),
            transforms.train_resize(image, 16, box),
        )


def _bilinear(image, size, box, clamp):
    """Plain bilinear resize of `box` to `size` x `size` in float64, sampling at PIL's points
    (left + (x + 0.5) * scale - 0.5), reading pixels within `clamp` = (left, top, right,
    bottom) and repeating its edge pixels past it."""
    left, top, right, bottom = box
    c_left, c_top, c_right, c_bottom = clamp

    def taps(start, stop, lo, hi):
        points = start + (np.arange(size) + 0.5) * (stop - start) / size - 0.5
        points = np.clip(points, lo, hi - 1)
        below = np.floor(points).astype(int)
        above = np.minimum(below + 1, hi - 1)
        return below, above, points - below

    y0, y1, wy = taps(top, bottom, c_top, c_bottom)
    x0, x1, wx = taps(left, right, c_left, c_right)
    pixels = image.astype(np.float64)
    rows = pixels[y0] * (1 - wy)[:, None, None] + pixels[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


@pytest.mark.parametrize("channels", [1, 3, 4, 5])
@pytest.mark.parametrize(
    "box",
    [
        (5, 7, 25, 19),  # upscaled 1.6x / 2.7x
        (3, 2, 51, 40),  # downscaled 1.5x / 1.19x
        (0, 0, 64, 50),  # downscaled 2x / 1.56x
        (3.25, 2.5, 40.75, 31.5),  # fractions of a pixel (a reduced JPEG decode's box)
    ],
)
def test_linear_resize_is_plain_bilinear(channels, box):
    image = _image(50, 64, channels)
    out = transforms._resize_linear(image, 32, box)
    assert out.shape == (32, 32, channels) and out.dtype == np.uint8
    # A whole-pixel box is resized as a view (edges repeated past the box), a fractional one
    # reads the image around it, as PIL does.
    whole = all(float(v).is_integer() for v in box)
    clamp = box if whole else (0, 0, 64, 50)
    reference = _bilinear(image, 32, box, clamp)
    # OpenCV's fixed-point weights: off by rounding only (measured max 0.75, mean 0.27). Its
    # warp places samples to 1/32 pixel before OpenCV 5, which on this noise (neighbours up to
    # 190 apart) measured max 3.8, mean 0.96 with 4.10; a box off by half a pixel: mean 21.
    error = np.abs(out - reference)
    assert error.max() < (1.0 if whole else 4.5)
    assert error.mean() < (0.35 if whole else 1.2)


def test_train_resize_is_antialiased_above_twice_the_size():
    image = _image(50, 64, 3)
    # 2x on the longer side: plain bilinear; a little more: PIL's antialiased filter.
    np.testing.assert_array_equal(
        transforms.train_resize(image, 16, (0, 0, 32, 28)),
        transforms._resize_linear(image, 16, (0, 0, 32, 28)),
    )
    np.testing.assert_array_equal(
        transforms.train_resize(image, 16, (0, 0, 33, 28)),
        transforms._resize(image, 16, (0, 0, 33, 28)),
    )
