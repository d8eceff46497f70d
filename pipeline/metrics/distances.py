"""Distribution distances on feature sets, in float64: KID and FID.

KID (Binkowski et al., 2018): the unbiased MMD^2 estimate with the polynomial
kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets; unbiased, so it is
meaningful on the few thousand samples a nightly run can afford. FID: the Frechet
distance between Gaussians fitted to the features, computed as pytorch-fid does.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg

from ..errors import PipelineError


def _as_features(feats, name: str) -> np.ndarray:
    a = np.asarray(feats, dtype=np.float64)
    if a.ndim != 2:
        raise PipelineError(f"{name}: expected features of shape [N, D], got {list(a.shape)}")
    if len(a) < 2:
        raise PipelineError(f"{name}: needs at least 2 samples, got {len(a)}")
    return a


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2: within-set kernel means exclude the diagonal (i == j) terms."""
    d, m, n = x.shape[1], len(x), len(y)
    kxx = (x @ x.T / d + 1) ** 3
    kyy = (y @ y.T / d + 1) ** 3
    kxy = (x @ y.T / d + 1) ** 3
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * kxy.mean())


def kid(feats_a, feats_b, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``num_subsets`` random subsets of equal size
    (``subset_size``, clipped to the smaller set), drawn without replacement."""
    a, b = _as_features(feats_a, "KID set a"), _as_features(feats_b, "KID set b")
    if a.shape[1] != b.shape[1]:
        raise PipelineError(f"KID: feature sizes differ, {a.shape[1]} vs {b.shape[1]}")
    if num_subsets < 1 or subset_size < 2:
        raise PipelineError(f"KID: need num_subsets >= 1 and subset_size >= 2, "
                            f"got {num_subsets} and {subset_size}")
    m = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [mmd2_unbiased(a[rng.choice(len(a), m, replace=False)],
                            b[rng.choice(len(b), m, replace=False)])
              for _ in range(num_subsets)]
    return float(np.mean(values)), float(np.std(values))


def feature_stats(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased) covariance of features [N, D], in float64."""
    f = _as_features(feats, "feature statistics")
    return f.mean(0), np.cov(f, rowvar=False)


def _sqrtm(a: np.ndarray) -> np.ndarray | None:
    """Matrix square root, or None where scipy finds the matrix singular or the result non-finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", linalg.LinAlgWarning)
        try:
            root = linalg.sqrtm(a)
        except (linalg.LinAlgWarning, linalg.LinAlgError):
            return None
    return root if np.isfinite(root).all() else None


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); a singular product is regularised
    with eps * I, and small imaginary parts from sqrtm are dropped, as in pytorch-fid."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    s1, s2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1),) * 2:
        raise PipelineError(f"FID statistics do not match: mu {list(mu1.shape)} vs "
                            f"{list(mu2.shape)}, sigma {list(s1.shape)} vs {list(s2.shape)}")
    covmean = _sqrtm(s1 @ s2)
    if covmean is None:
        offset = np.eye(len(s1)) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise PipelineError(f"FID: sqrtm has an imaginary component "
                                f"{np.max(np.abs(covmean.imag)):.3g}; statistics are degenerate")
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
