"""Fréchet distance (FID) and kernel distance (KID) between two sets of image features.

Computed on the host in float64 as the reference implementations do, so that on the same
float64 feature arrays the numbers equal theirs. Features of any other dtype are converted to
float64 here, on purpose, where the references keep float32 features in float32 in places
(torch-fidelity's KID kernels, pytorch-fid's means): on float32 features the numbers then
differ by the references' float32 rounding, which grows with the features' distance from 0
(KID 12% apart for features offset by 1e3). The references' algorithms:

- `frechet_distance`: pytorch-fid's `calculate_frechet_distance` — scipy's matrix square root
  of sigma1 @ sigma2; when that is not finite (a singular product), eps * I is added to both
  covariances and the root taken again; a complex root is accepted only when its diagonal's
  imaginary parts are within 1e-3 of zero, and then its real part is used.
- `feature_statistics`: pytorch-fid's mean and `np.cov(rowvar=False)` (unbiased, N - 1).
- `kernel_inception_distance`: torch-fidelity's KID — the unbiased MMD^2 estimate with the
  polynomial kernel (x.y / D + 1)^3, averaged over 100 random subsets of 1,000 features of
  each set, the subsets drawn by `np.random.RandomState(seed).choice(..., replace=False)`,
  real set first, with torch-fidelity's default seed 2020.

The features are what matters for comparability: the FID Inception-v3 pool3 features
(`jaxvision.models.fid_inception`) give numbers comparable to published FIDs; any other
extractor (the digits-FID network) gives numbers comparable only among themselves.
"""

import numpy as np
import scipy.linalg

from jaxvision.errors import UserError

# pytorch-fid's offset, and its tolerance on the imaginary part of the root's diagonal.
SINGULAR_EPS = 1e-6
IMAGINARY_ATOL = 1e-3
# torch-fidelity's defaults.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
KID_SEED = 2020
# Up to this many features per set, KID computes each whole kernel matrix once (3 x 4096^2
# float64: 400 MB at most).
KID_WHOLE_KERNEL_ROWS = 4096


def _features(features, name: str) -> np.ndarray:
    array = np.asarray(features, np.float64)
    if array.ndim != 2 or len(array) < 2:
        raise UserError(
            f"{name}: expected features [N, D] with N >= 2, got shape {np.shape(features)}; "
            "pass one row of features per image"
        )
    if not np.isfinite(array).all():
        raise UserError(f"{name}: features hold NaN or inf values; check the feature extractor")
    return array


def feature_statistics(features) -> tuple[np.ndarray, np.ndarray]:
    """features: [N, D] (N >= 2) -> (mu [D], sigma [D, D]) float64, as pytorch-fid's
    `calculate_activation_statistics`: the mean and the unbiased covariance."""
    features = _features(features, "feature_statistics")
    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def _matrix_sqrt(matrix: np.ndarray) -> np.ndarray:
    return scipy.linalg.sqrtm(matrix)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = SINGULAR_EPS) -> float:
    """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)) between the Gaussians
    N(mu1, sigma1) and N(mu2, sigma2); mu: [D], sigma: [D, D] (or scalars for D = 1).

    Raises UserError when the shapes differ, and when the square root keeps an imaginary part
    beyond pytorch-fid's tolerance (where it raises ValueError): the covariances are not
    positive semi-definite.
    """
    mu1, mu2 = (
        np.atleast_1d(np.asarray(mu1, np.float64)),
        np.atleast_1d(np.asarray(mu2, np.float64)),
    )
    sigma1 = np.atleast_2d(np.asarray(sigma1, np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise UserError(
            f"frechet_distance: means {mu1.shape}, {mu2.shape} and covariances {sigma1.shape}, "
            f"{sigma2.shape} do not fit: both sets need features of the same dimension"
        )
    diff = mu1 - mu2
    covmean = _matrix_sqrt(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        # A (nearly) singular product, e.g. fewer samples than dimensions: regularise both.
        from jaxvision.train import reporting

        reporting.note(f"FID: singular covariance product; adding {eps} to the diagonals")
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _matrix_sqrt((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Rounding can leave a small imaginary part; a large one means a broken covariance.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=IMAGINARY_ATOL):
            raise UserError(
                f"frechet_distance: the square root of sigma1 @ sigma2 has an imaginary "
                f"component of {np.max(np.abs(covmean.imag)):.3g}: the covariances are not "
                "positive semi-definite; compute them with feature_statistics"
            )
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_from_features(real_features, fake_features) -> float:
    """The FID of two feature sets [N1, D] and [N2, D]: `frechet_distance` of their
    `feature_statistics`, in float64 whatever the features' dtype (pytorch-fid's exactly on
    float64 features; see the module docstring for float32)."""
    return frechet_distance(*feature_statistics(real_features), *feature_statistics(fake_features))


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int, gamma, coef0: float):
    """[N, D] x [M, D] -> [N, M]: (gamma x.y + coef0)^degree, gamma = 1 / D when None."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    base = np.matmul(x, y.T) * gamma + coef0
    if isinstance(degree, int | np.integer) and degree >= 1:
        # Repeated products: numpy's float power is ~50x slower and differs only in rounding.
        out = base
        for _ in range(int(degree) - 1):
            out = out * base
        return out
    return base**degree


def unbiased_mmd2(m: int, sum_xx, trace_xx, sum_xy, sum_yy, trace_yy) -> float:
    """The unbiased MMD^2 estimate from the sums and traces of [m, m] kernel matrices: the
    within-set means leave the diagonal out, the cross term keeps it (torch-fidelity's `mmd2`,
    mmd_est="unbiased")."""
    within = (sum_xx - trace_xx + sum_yy - trace_yy) / (m * (m - 1))
    return float(within - 2 * sum_xy / (m * m))


def kernel_inception_distance(
    real_features,
    fake_features,
    *,
    subsets: int = KID_SUBSETS,
    subset_size: int = KID_SUBSET_SIZE,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    seed: int = KID_SEED,
) -> tuple[float, float]:
    """KID of real_features [N1, D] and fake_features [N2, D] -> (mean, std) over `subsets`.

    Each subset draws min(subset_size, N1, N2) rows of each set without replacement (real
    first, then fake, from one `np.random.RandomState(seed)`): with N1, N2 >= subset_size the
    draws and numbers are torch-fidelity's; smaller sets (which torch-fidelity refuses) use
    subsets of all of the smaller count. std is numpy's (ddof=0), as torch-fidelity reports.
    Computed in float64 whatever the features' dtype: torch-fidelity's numbers exactly on
    float64 features; on float32 ones it computes its kernels in float32 and differs.
    """
    real = _features(real_features, "kernel_inception_distance real_features")
    fake = _features(fake_features, "kernel_inception_distance fake_features")
    if real.shape[1] != fake.shape[1]:
        raise UserError(
            f"kernel_inception_distance: real features have {real.shape[1]} dimensions, fake "
            f"ones {fake.shape[1]}: use the same feature extractor for both"
        )
    if subsets < 1 or subset_size < 2:
        raise UserError(
            f"kernel_inception_distance: subsets={subsets}, subset_size={subset_size}: use "
            "subsets >= 1 and subset_size >= 2"
        )
    size = min(subset_size, len(real), len(fake))
    kernel = lambda a, b: polynomial_kernel(a, b, degree, gamma, coef0)  # noqa: E731
    # Small sets: each kernel matrix once; a subset's block sum is then w' K v with 0/1
    # indicator vectors (the same sum up to rounding), not three [size, size] products.
    whole = max(len(real), len(fake)) <= KID_WHOLE_KERNEL_ROWS
    if whole:
        k_xx, k_xy, k_yy = kernel(real, real), kernel(real, fake), kernel(fake, fake)
    rng = np.random.RandomState(seed)
    mmds = np.zeros(subsets)
    for i in range(subsets):
        rows = rng.choice(len(real), size, replace=False)
        cols = rng.choice(len(fake), size, replace=False)
        if whole:
            w, v = np.zeros(len(real)), np.zeros(len(fake))
            w[rows], v[cols] = 1.0, 1.0
            sums = (w @ k_xx @ w, np.diagonal(k_xx)[rows].sum(), w @ k_xy @ v)
            sums += (v @ k_yy @ v, np.diagonal(k_yy)[cols].sum())
        else:
            x, y = real[rows], fake[cols]
            k_x, k_y, k_c = kernel(x, x), kernel(y, y), kernel(x, y)
            sums = (k_x.sum(), np.trace(k_x), k_c.sum(), k_y.sum(), np.trace(k_y))
        mmds[i] = unbiased_mmd2(size, *sums)
    return float(np.mean(mmds)), float(np.std(mmds))
