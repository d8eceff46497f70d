"""FID reference statistics: pytorch-fid .npz files (and their bad forms), the cache
keyed by what the statistics depend on, and the low-sample-count policy."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.errors import PipelineError
from pipeline.metrics.distances import feature_stats, frechet_distance
from pipeline.metrics.fid import FEATURE_DIM, cached_stats, check_sample_count, load_npz, save_npz


@pytest.fixture
def feats():
    return np.random.default_rng(0).normal(size=(64, FEATURE_DIM))


def test_saved_statistics_load_back_in_pytorch_fid_format(tmp_path, feats):
    save_npz(tmp_path / "s.npz", feats)
    with np.load(tmp_path / "s.npz") as data:
        assert {"mu", "sigma"} <= set(data.files)  # what pytorch-fid reads
    stats = load_npz(tmp_path / "s.npz")
    mu, sigma = feature_stats(feats)
    assert np.array_equal(stats.mu, mu) and np.array_equal(stats.sigma, sigma)
    assert stats.n == 64
    # 64 samples: a rank-deficient covariance, so sqrtm is only accurate to ~1e-3 here
    assert frechet_distance(stats.mu, stats.sigma, mu, sigma) == pytest.approx(0, abs=1e-2)


@pytest.mark.parametrize("arrays, match", [
    ({"mu": np.zeros(FEATURE_DIM)}, "missing \\['sigma'\\]"),
    ({"mu": np.zeros(10), "sigma": np.eye(10)}, r"expected mu \[2048\].*got mu \[10\]"),
    ({"mu": np.zeros(FEATURE_DIM), "sigma": np.eye(FEATURE_DIM)[:5]}, "sigma \\[5, 2048\\]"),
    ({"mu": np.full(FEATURE_DIM, np.nan), "sigma": np.eye(FEATURE_DIM)}, "NaN"),
    ({"mu": np.zeros(FEATURE_DIM), "sigma": np.triu(np.ones((FEATURE_DIM,) * 2))}, "symmetric"),
])
def test_bad_npz_files_are_named_with_the_problem(tmp_path, arrays, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(PipelineError, match=match) as e:
        load_npz(path)
    assert "bad.npz" in str(e.value)


def test_not_an_npz_and_missing_file(tmp_path):
    (tmp_path / "x.npz").write_text("not numpy")
    with pytest.raises(PipelineError, match="not a numpy .npz"):
        load_npz(tmp_path / "x.npz")
    with pytest.raises(PipelineError, match="no such reference"):
        load_npz(tmp_path / "missing.npz")


def test_pickled_npz_content_is_refused(tmp_path):
    np.savez(tmp_path / "p.npz", mu=np.array([object()], dtype=object), sigma=np.eye(2))
    with pytest.raises(PipelineError, match="not a numpy .npz"):
        load_npz(tmp_path / "p.npz")


def test_cache_hits_on_the_same_key_and_recomputes_a_damaged_entry(tmp_path, feats):
    calls = []

    def compute():
        calls.append(1)
        return feats

    parts = {"source": "teacher", "n": 64}
    first, cached = cached_stats(tmp_path, parts, "t", compute)
    assert not cached and len(calls) == 1
    second, cached = cached_stats(tmp_path, parts, "t", compute)
    assert cached and len(calls) == 1 and np.array_equal(second.mu, first.mu)
    _, cached = cached_stats(tmp_path, {**parts, "n": 65}, "t", compute)  # other key
    assert not cached and len(calls) == 2
    for p in tmp_path.glob("*.npz"):
        p.write_bytes(b"damaged")
    _, cached = cached_stats(tmp_path, parts, "t", compute)
    assert not cached and len(calls) == 3


def test_too_few_samples_fail_or_warn_by_policy(caplog):
    with pytest.raises(PipelineError, match="evaluate.num_samples above 2048"):
        check_sample_count(100, "fail", "models", "evaluate.num_samples")
    assert check_sample_count(100, "warn", "models", "evaluate.num_samples") is True
    assert "rank-deficient" in caplog.text
    assert check_sample_count(5000, "fail", "models", "evaluate.num_samples") is False
