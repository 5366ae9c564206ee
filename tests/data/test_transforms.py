"""Host augmentation: shapes, dtypes, value ranges, determinism and exact crop/flip geometry."""

import numpy as np
import pytest

from jaxvision.data import flip, inception_crop, pad_crop, resize_center_crop


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
    # is resized, exactly as resize_center_crop does it.
    out = inception_crop(image, 24, np.random.default_rng(0), area_range=(2.0, 3.0))
    np.testing.assert_array_equal(out, resize_center_crop(image, 24, 1.0))


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
