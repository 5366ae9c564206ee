"""digits-FID: the shipped classifier reads the digits' test split (never trained on) at its
recorded accuracy, and its features separate digits from non-digits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvision.data import open_dataset
from jaxvision.errors import UserError
from jaxvision.evaluation import digits_fid, fid


@pytest.fixture(scope="module")
def test_split():
    split = open_dataset("digits").test
    images = np.stack([split[i]["image"] for i in range(len(split))])
    labels = np.array([split[i]["label"] for i in range(len(split))])
    return digits_fid.upsample_digits(images), labels


def test_test_split_accuracy_is_the_recorded_one(test_split):
    images, labels = test_split
    logits = np.asarray(jax.jit(digits_fid.digits_classify)(jnp.asarray(images)))
    accuracy = float(np.mean(logits.argmax(-1) == labels))
    assert logits.shape == (360, 10)
    assert accuracy >= 0.98
    assert accuracy == pytest.approx(digits_fid.TEST_ACCURACY, abs=1e-9)


def test_features_take_uint8_or_unit_range_floats(test_split):
    images = test_split[0][:16]
    features = np.asarray(digits_fid.digits_features(images))
    assert features.shape == (16, digits_fid.FEATURES) and features.dtype == np.float32
    as_float = images.astype(np.float32) / 127.5 - 1.0  # a generator's tanh range
    np.testing.assert_allclose(digits_fid.digits_features(as_float), features, atol=1e-5)
    with pytest.raises(UserError, match=r"\[B, 32, 32, 1\]"):
        digits_fid.digits_features(np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(UserError, match="unknown method"):
        digits_fid.upsample_digits(np.zeros((1, 8, 8, 1), np.uint8), "lanczos")


@pytest.mark.slow
def test_digits_fid_separates_digits_from_noise(test_split):
    images, labels = test_split
    split = open_dataset("digits").train
    train = digits_fid.upsample_digits(np.stack([split[i]["image"] for i in range(len(split))]))
    real = np.asarray(digits_fid.digits_features(train))
    # Standardised by the train split's statistics.
    np.testing.assert_allclose(real.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(real.std(0), 1.0, atol=1e-4)
    test = np.asarray(digits_fid.digits_features(images))
    # Blurred noise blobs in the digits' value range: not digits.
    rng = np.random.default_rng(0)
    noise = digits_fid.upsample_digits((rng.random((360, 8, 8, 1)) ** 3 * 255).astype(np.uint8))
    fake = np.asarray(digits_fid.digits_features(noise))
    digits_vs_digits = fid.fid_from_features(real, test)  # unseen digits: ~0.8
    assert fid.fid_from_features(real, fake) > 20 * digits_vs_digits
    kid = lambda other: fid.kernel_inception_distance(real, other, subsets=20)[0]  # noqa: E731
    assert kid(fake) > 20 * abs(kid(test))
    # One digit class alone is far from all ten: FID sees mode collapse.
    ones = test[labels == 1]
    assert fid.fid_from_features(real, ones) > 20 * digits_vs_digits
