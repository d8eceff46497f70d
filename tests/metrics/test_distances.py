"""KID and FID against direct computations on known inputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from pipeline.errors import PipelineError
from pipeline.metrics.distances import (
    feature_stats,
    frechet_distance,
    frechet_distance_to,
    kid,
    mmd2_unbiased,
)


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased estimator written out term by term, O(n^2) loops."""
    d = x.shape[1]
    def k(a, b):
        return (a @ b / d + 1) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_unbiased_mmd_matches_direct_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)), rng.normal(0.3, 1.2, size=(7, 5))
    assert mmd2_unbiased(x, y) == pytest.approx(_direct_mmd2(x, y), rel=1e-10)
    # With subsets covering the whole sets, every subset is the full set: KID is that value.
    mean, std = kid(x, y, num_subsets=3, subset_size=100)
    assert mean == pytest.approx(_direct_mmd2(x, y), rel=1e-10) and std == pytest.approx(0, abs=1e-12)


def test_kid_near_zero_for_same_distribution_and_positive_for_shift():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 16))
    same, _ = kid(a, a, num_subsets=10, subset_size=50)
    other, _ = kid(a, rng.normal(size=(200, 16)), num_subsets=10, subset_size=50)
    shifted, std = kid(a, a + 1.0, num_subsets=10, subset_size=50)
    # k(x, x) is about 8 here: the estimates of zero are noise two orders below the shift.
    assert abs(same) < 0.02 * shifted and abs(other) < 0.02 * shifted
    assert shifted > 1.0 and shifted > 10 * std


def test_kid_is_seeded_and_rejects_tiny_sets():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(40, 4))
    assert kid(a, b, 5, 10, seed=3) == kid(a, b, 5, 10, seed=3)
    with pytest.raises(PipelineError, match="at least 2"):
        kid(a[:1], b)
    with pytest.raises(PipelineError, match="feature sizes"):
        kid(a, b[:, :3])


def test_fid_matches_direct_computation():
    rng = np.random.default_rng(3)
    f1, f2 = rng.normal(size=(50, 6)), rng.normal(0.5, 2.0, size=(60, 6))
    (mu1, s1), (mu2, s2) = feature_stats(f1), feature_stats(f2)
    np.testing.assert_allclose(mu1, f1.mean(0))
    np.testing.assert_allclose(s1, np.cov(f1.T))
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-9)


def test_fid_zero_for_identical_stats_and_grows_with_perturbation():
    rng = np.random.default_rng(4)
    mu, s = feature_stats(rng.normal(size=(100, 8)))
    assert frechet_distance(mu, s, mu, s) == pytest.approx(0, abs=1e-6)
    small = frechet_distance(mu, s, mu + 0.1, s)
    large = frechet_distance(mu, s, mu + 0.5, s * 2)
    assert 0 < small < large
    assert small == pytest.approx(8 * 0.1**2, rel=1e-6)


def test_fid_singular_covariances_are_regularised():
    rng = np.random.default_rng(5)
    mu1, s1 = feature_stats(rng.normal(size=(4, 10)))  # rank 3 < 10
    mu2, s2 = feature_stats(rng.normal(size=(4, 10)))
    value = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value) and value > 0
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0, abs=1e-3)


def test_fid_rejects_mismatched_stats():
    with pytest.raises(PipelineError, match="do not match"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


@pytest.mark.parametrize("n", [5, 40, 60])  # fewer samples than dimensions, and more
def test_fid_from_features_equals_fid_from_their_statistics(n):
    """The N x N form (fewer samples than feature dimensions) is the same number, up to the
    D x D form's own error: the square roots of a singular product's rounding-level
    eigenvalues (~1e-15 each, ~3e-8 as roots) add up to ~1e-6 there."""
    rng = np.random.default_rng(n)
    feats, ref = rng.normal(size=(n, 48)), rng.normal(1.0, 2.0, size=(70, 48))
    mu2, s2 = feature_stats(ref)
    want = frechet_distance(*feature_stats(feats), mu2, s2)
    assert frechet_distance_to(feats, mu2, s2) == pytest.approx(want, rel=1e-7)
    with pytest.raises(PipelineError, match="do not match"):
        frechet_distance_to(feats, mu2[:-1], s2[:-1, :-1])

