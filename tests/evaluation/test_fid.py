"""FID and KID equal pytorch-fid's and torch-fidelity's on the same features: the committed
references (fixtures/make_fid_fixtures.py) without torch, and the tools themselves where they
are installed."""

import os

import numpy as np
import pytest

from jaxvision.errors import UserError
from jaxvision.evaluation import fid

HERE = os.path.dirname(os.path.abspath(__file__))
KID_FIXTURE = dict(subsets=20, subset_size=100, seed=2020)


@pytest.fixture(scope="module")
def reference():
    with np.load(os.path.join(HERE, "fixtures", "fid_reference.npz")) as data:
        return {k: data[k] for k in data.files}


def test_fid_equals_pytorch_fid_reference(reference):
    assert (
        abs(fid.fid_from_features(reference["real"], reference["fake"]) - reference["fid"]) < 1e-6
    )
    low = fid.fid_from_features(reference["real_low_rank"], reference["fake_low_rank"])
    assert abs(low - reference["fid_low_rank"]) < 1e-6


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # singular: expected
def test_fid_with_dead_units_equals_reference(reference):
    real, fake = reference["real"].copy(), reference["fake"].copy()
    real[:, :5], fake[:, :5] = 0.0, 1.0
    assert abs(fid.fid_from_features(real, fake) - reference["fid_constant_dims"]) < 1e-6


def test_non_finite_root_takes_the_eps_branch(reference, monkeypatch):
    calls = []
    original = fid._matrix_sqrt

    def first_root_nan(matrix):
        calls.append(matrix)
        root = original(matrix)
        return np.full_like(root, np.nan) if len(calls) == 1 else root

    monkeypatch.setattr(fid, "_matrix_sqrt", first_root_nan)
    value = fid.fid_from_features(reference["real"], reference["fake"])
    assert len(calls) == 2
    assert abs(value - reference["fid_eps"]) < 1e-6
    assert abs(value - reference["fid"]) > 1e-5  # the offset moved it: the branch really ran


def test_kid_equals_torch_fidelity_reference(reference):
    mean, std = fid.kernel_inception_distance(reference["real"], reference["fake"], **KID_FIXTURE)
    assert abs(mean - reference["kid_mean"]) < 1e-6
    assert abs(std - reference["kid_std"]) < 1e-6


def test_statistics_and_identity():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    mu, sigma = fid.feature_statistics(x)
    assert mu.dtype == sigma.dtype == np.float64
    centred = x.astype(np.float64) - x.astype(np.float64).mean(0)
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)
    # A set against itself: 0 (up to the root's rounding); a shifted copy: the squared shift.
    assert abs(fid.fid_from_features(x, x)) < 1e-9
    x64 = x.astype(np.float64)
    assert fid.fid_from_features(x64, x64 + 2.0) == pytest.approx(16.0, abs=1e-8)
    # Diagonal Gaussians: (m1 - m2)^2 + (s1 - s2)^2 per dimension.
    value = fid.frechet_distance([0.0, 1.0], np.diag([4.0, 1.0]), [1.0, 1.0], np.diag([1.0, 9.0]))
    assert value == pytest.approx(1.0 + 1.0 + 4.0, abs=1e-12)


def test_kid_is_unbiased_mmd_with_cubic_kernel():
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.5
    k = lambda a, b: (a @ b.T / 3 + 1) ** 3  # noqa: E731
    m = 6
    expected = (
        (k(x, x).sum() - np.trace(k(x, x))) / (m * (m - 1))
        + (k(y, y).sum() - np.trace(k(y, y))) / (m * (m - 1))
        - 2 * k(x, y).mean()
    )
    # One subset of all rows is the whole set in some order: the estimate itself, std 0.
    mean, std = fid.kernel_inception_distance(x, y, subsets=1, subset_size=6)
    assert mean == pytest.approx(expected, rel=1e-12)
    assert std == 0.0
    # Fewer samples than subset_size: subsets of all of the smaller set, still exact.
    assert fid.kernel_inception_distance(x, y, subsets=3)[0] == pytest.approx(expected, rel=1e-12)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(UserError, match="same dimension"):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(UserError, match="not positive semi-definite"):
        fid.frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(UserError, match=r"features \[N, D\] with N >= 2"):
        fid.feature_statistics(np.zeros((1, 4)))
    with pytest.raises(UserError, match="NaN"):
        fid.fid_from_features(np.full((3, 2), np.nan), np.zeros((3, 2)))
    with pytest.raises(UserError, match="same feature extractor"):
        fid.kernel_inception_distance(np.zeros((4, 2)), np.zeros((4, 3)))


# --- against the tools themselves, where torch is installed -------------------------------


@pytest.fixture(scope="module")
def tools():
    pytest.importorskip("torch")
    pytest.importorskip("pytorch_fid")
    pytest.importorskip("torch_fidelity")
    import sys

    sys.path.insert(0, os.path.join(HERE, "fixtures"))
    import make_fid_fixtures

    return make_fid_fixtures


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
@pytest.mark.parametrize("n,d", [(300, 32), (30, 48)])
def test_fid_equals_pytorch_fid(tools, n, d):
    real, fake = tools.feature_sets(n + d, n, d)
    assert abs(fid.fid_from_features(real, fake) - tools.pytorch_fid(real, fake)) < 1e-6
    real[:, :3], fake[:, :3] = 0.0, 2.0
    assert abs(fid.fid_from_features(real, fake) - tools.pytorch_fid(real, fake)) < 1e-6


def test_fid_eps_branch_equals_pytorch_fid(tools, monkeypatch):
    real, fake = tools.feature_sets(7, 100, 16)
    expected = tools.pytorch_fid_eps_branch(real, fake)
    calls = []
    original = fid._matrix_sqrt

    def first_root_nan(matrix):
        calls.append(1)
        return np.full_like(original(matrix), np.nan) if len(calls) == 1 else original(matrix)

    monkeypatch.setattr(fid, "_matrix_sqrt", first_root_nan)
    assert abs(fid.fid_from_features(real, fake) - expected) < 1e-6


def test_non_psd_is_refused_like_pytorch_fid(tools):
    from pytorch_fid.fid_score import calculate_frechet_distance

    args = (np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="Imaginary component"):
        calculate_frechet_distance(*args)
    with pytest.raises(UserError):
        fid.frechet_distance(*args)


def test_kid_equals_torch_fidelity_defaults(tools):
    # torch-fidelity's defaults: 100 subsets of 1,000, seed 2020, on float32 features (its
    # kernel arithmetic then runs in float32, ours in float64).
    real, fake = tools.feature_sets(11, 1100, 32)
    real = np.abs(real)  # Inception pool3 features are non-negative
    expected = tools.torch_fidelity_kid(real, fake, kid_subsets=100, kid_subset_size=1000)
    ours = fid.kernel_inception_distance(real, fake)
    assert abs(ours[0] - expected[0]) < 1e-6 and abs(ours[1] - expected[1]) < 1e-6


def test_kid_other_kernel_settings_equal_torch_fidelity(tools):
    real, fake = tools.feature_sets(12, 150, 8)
    expected = tools.torch_fidelity_kid(
        real.astype(np.float64),
        fake.astype(np.float64),
        kid_subsets=7,
        kid_subset_size=50,
        kid_kernel_poly_degree=2,
        kid_kernel_poly_gamma=0.3,
        kid_kernel_poly_coef0=0.5,
        rng_seed=5,
    )
    ours = fid.kernel_inception_distance(
        real, fake, subsets=7, subset_size=50, degree=2, gamma=0.3, coef0=0.5, seed=5
    )
    np.testing.assert_allclose(ours, expected, atol=1e-9)
