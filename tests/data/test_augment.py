"""RandAugment ops and random erasing: shapes, dtypes, ranges, determinism, identity at level 0."""

import numpy as np
import pytest

from jaxvision.data.augment import (
    OPS,
    RAND_AUGMENT_OPS,
    SIGNED_OPS,
    apply_op,
    rand_augment,
    random_erasing,
)

# Ops whose strength scales with the level and that leave the image as is at level 0.
SCALED_OPS = sorted(set(OPS) - {"AutoContrast", "Equalize", "Invert"})


def _image(height, width, channels, seed=0):
    return np.random.default_rng(seed).integers(10, 200, (height, width, channels), dtype=np.uint8)


def test_op_table_is_timm_set():
    assert set(RAND_AUGMENT_OPS) == set(OPS) and len(OPS) == 15
    assert set(OPS) > SIGNED_OPS


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("channels", [1, 3])
def test_each_op_keeps_shape_and_dtype_and_changes_the_image(name, channels):
    image = _image(24, 20, channels)
    for level in (-1.0, -0.3, 0.5, 1.0):
        out = apply_op(image, name, level)
        assert out.shape == image.shape and out.dtype == np.uint8
    # At full strength every op changes a random image (none silently does nothing), except
    # saturation on grey, which has none.
    unchanged = np.array_equal(apply_op(image, name, 1.0), image)
    assert unchanged == (name == "Color" and channels == 1)


@pytest.mark.parametrize("name", SCALED_OPS)
@pytest.mark.parametrize("channels", [1, 3])
def test_level_zero_is_identity(name, channels):
    image = _image(17, 23, channels)
    np.testing.assert_array_equal(apply_op(image, name, 0.0), image)


def test_op_values():
    image = _image(16, 16, 3)
    np.testing.assert_array_equal(apply_op(image, "Invert", 0.0), 255 - image)
    # Solarize at full strength inverts every pixel.
    np.testing.assert_array_equal(apply_op(image, "Solarize", 1.0), 255 - image)
    # Posterize at full strength keeps the 4 high bits.
    np.testing.assert_array_equal(apply_op(image, "Posterize", 1.0), image & 0xF0)
    # SolarizeAdd adds 110 below 128, clipped, and leaves the rest.
    add = np.where(image < 128, np.minimum(image.astype(int) + 110, 255), image)
    np.testing.assert_array_equal(apply_op(image, "SolarizeAdd", 1.0), add)
    # Brightness 1 - 0.9: a tenth of every pixel (PIL rounds).
    dark = apply_op(image, "Brightness", -1.0)
    assert np.abs(dark.astype(int) - image.astype(int) * 0.1).max() <= 1
    # AutoContrast stretches to the full range.
    stretched = apply_op(image, "AutoContrast", 0.0)
    assert stretched.min() == 0 and stretched.max() == 255


def test_geometric_ops_fill_grey_and_move_pixels():
    image = np.full((20, 20, 3), 7, np.uint8)
    # Translating by 45% of the width uncovers columns that are filled with 128.
    moved = apply_op(image, "TranslateX", 1.0)
    assert (moved[:, -8:] == 128).all() and (moved[:, :10] == 7).all()
    moved = apply_op(image, "TranslateY", -1.0)
    assert (moved[:8] == 128).all() and (moved[-10:] == 7).all()
    rotated = apply_op(image, "Rotate", 1.0)
    assert rotated[0, 0, 0] == 128 and rotated[10, 10, 0] == 7
    # A single bright pixel moves right by 9 = 0.45 * 20 columns.
    dot = np.zeros((20, 20, 1), np.uint8)
    dot[5, 3] = 255
    assert apply_op(dot, "TranslateX", -1.0)[5, 12, 0] == 255


@pytest.mark.parametrize("channels", [1, 3])
def test_rand_augment_is_deterministic_per_seed(channels):
    image = _image(32, 32, channels)
    outs = [rand_augment(image, np.random.default_rng(s), 2, 9) for s in range(8)]
    for s, out in enumerate(outs):
        assert out.shape == image.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out, rand_augment(image, np.random.default_rng(s), 2, 9))
    assert len({out.tobytes() for out in outs}) > 4


def test_rand_augment_magnitude_std_and_op_subset():
    image = _image(32, 32, 3)
    a = rand_augment(image, np.random.default_rng(3), magnitude_std=0.5)
    np.testing.assert_array_equal(
        a, rand_augment(image, np.random.default_rng(3), magnitude_std=0.5)
    )
    b = rand_augment(image, np.random.default_rng(3), magnitude_std=float("inf"), op_prob=1.0)
    assert b.shape == image.shape
    # Only Invert, always applied, three times: one inversion.
    out = rand_augment(image, np.random.default_rng(0), num_ops=3, op_prob=1.0, ops=("Invert",))
    np.testing.assert_array_equal(out, 255 - image)
    # op_prob 0 applies nothing.
    np.testing.assert_array_equal(rand_augment(image, np.random.default_rng(0), op_prob=0.0), image)


@pytest.mark.parametrize("name", SCALED_OPS)
def test_rand_augment_magnitude_zero_is_identity_for_scaled_ops(name):
    image = _image(16, 16, 3)
    out = rand_augment(image, np.random.default_rng(1), 2, 0, op_prob=1.0, ops=(name,))
    np.testing.assert_array_equal(out, image)


def test_rand_augment_rejects_other_channel_counts():
    with pytest.raises(ValueError, match="uint8"):
        rand_augment(_image(8, 8, 4), np.random.default_rng(0))


@pytest.mark.parametrize("mode", ["pixel", "channel", "const"])
@pytest.mark.parametrize("channels", [1, 3])
def test_random_erasing_area_and_determinism(mode, channels):
    image = np.full((40, 50, channels), 1, np.uint8)
    area = image.shape[0] * image.shape[1]
    for seed in range(40):
        out = random_erasing(image, np.random.default_rng(seed), probability=1.0, mode=mode)
        assert out.shape == image.shape and out.dtype == np.uint8
        erased = (out != 1).any(-1)
        if mode == "const":
            assert (out[erased] == 0).all()
        # The box: the bounding box of changed pixels (noise may leave a few pixels at 1).
        ys, xs = np.nonzero(erased)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert erased.sum() <= box
        if mode != "pixel":
            assert erased.sum() == box
        # Sides are rounded, so allow a pixel of slack on each.
        assert 0.02 * area * 0.8 <= box <= area / 3 * 1.2
        again = random_erasing(image, np.random.default_rng(seed), probability=1.0, mode=mode)
        np.testing.assert_array_equal(out, again)
    assert image.max() == 1  # the input is not modified


def test_random_erasing_probability():
    image = _image(20, 20, 3)
    for seed in range(20):
        assert random_erasing(image, np.random.default_rng(seed), probability=0.0) is image
    erased = sum(
        not np.array_equal(random_erasing(image, np.random.default_rng(s), 0.25), image)
        for s in range(400)
    )
    assert 60 < erased < 140


def test_random_erasing_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        random_erasing(_image(8, 8, 3), np.random.default_rng(0), mode="rand")
