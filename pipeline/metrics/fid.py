"""FID/KID reference statistics: from teacher samples, a folder of real images, or a
precomputed pytorch-fid ``.npz`` (``mu`` [2048], ``sigma`` [2048, 2048]).

Computed statistics are cached as ``.npz`` files (pytorch-fid's keys plus the raw
``features``, which KID needs) named by a digest of everything they depend on: the
source and its content, the sample count and seed, the resolution and the feature
network. Statistics are float64 throughout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PipelineError
from ..io import atomic_path
from .distances import feature_stats

log = logging.getLogger(__name__)
FEATURE_DIM = 2048  # pytorch-fid's pool3 features


@dataclass
class ReferenceStats:
    mu: np.ndarray
    sigma: np.ndarray
    features: np.ndarray | None  # None for a precomputed .npz: KID needs the features
    source: str

    @property
    def n(self) -> int | None:
        return None if self.features is None else len(self.features)


def load_npz(path: str | Path) -> ReferenceStats:
    """pytorch-fid statistics; wrong keys, shapes or values fail naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:  # no pickled objects from a file
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise PipelineError(f"{path}: no such reference statistics file") from None
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise PipelineError(f"{path}: not a numpy .npz file ({e})") from None
    missing = {"mu", "sigma"} - set(arrays)
    if missing:
        raise PipelineError(f"{path}: reference statistics need keys mu and sigma "
                            f"(pytorch-fid's format), missing {sorted(missing)}")
    mu, sigma = arrays["mu"].astype(np.float64), arrays["sigma"].astype(np.float64)
    if mu.shape != (FEATURE_DIM,) or sigma.shape != (FEATURE_DIM, FEATURE_DIM):
        raise PipelineError(f"{path}: expected mu [{FEATURE_DIM}] and sigma [{FEATURE_DIM}, "
                            f"{FEATURE_DIM}] (Inception pool3), got mu {list(mu.shape)} and "
                            f"sigma {list(sigma.shape)}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise PipelineError(f"{path}: mu/sigma contain NaN or inf")
    if not np.allclose(sigma, sigma.T, atol=1e-6 * max(1.0, float(np.abs(sigma).max()))):
        raise PipelineError(f"{path}: sigma is not symmetric: not a covariance matrix")
    features = arrays.get("features")
    if features is not None and features.shape[1:] != (FEATURE_DIM,):
        features = None
    return ReferenceStats(mu, sigma, None if features is None else features.astype(np.float64),
                          f"npz:{path}")


def save_npz(path: Path, features: np.ndarray) -> None:
    mu, sigma = feature_stats(features)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, mu=mu, sigma=sigma, features=features)


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def cached_stats(cache_dir: str | Path, parts: dict, source: str,
                 compute: Callable[[], np.ndarray]) -> tuple[ReferenceStats, bool]:
    """Statistics keyed by ``parts``: read from the cache, or computed and cached.
    Returns (statistics, whether they came from the cache)."""
    path = Path(cache_dir) / f"{cache_key(parts)}.npz"
    if path.exists():
        try:
            stats = load_npz(path)
            if stats.features is not None:
                return ReferenceStats(stats.mu, stats.sigma, stats.features, source), True
        except PipelineError as e:  # a damaged entry is recomputed, not trusted
            log.warning("ignoring cached reference statistics: %s", e)
    features = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, features)
    mu, sigma = feature_stats(features)
    return ReferenceStats(mu, sigma, features, source), False


def check_sample_count(n: int, policy: str, what: str, key: str) -> bool:
    """Below FEATURE_DIM + 1 samples the covariance is rank-deficient and FID is biased
    upward: fail (naming ``key``), or warn; returns whether it is rank-deficient."""
    if n > FEATURE_DIM:
        return False
    message = (f"{what}: {n} samples for {FEATURE_DIM}-d Inception features: the covariance "
               f"is rank-deficient, so FID is biased (only comparable at equal sample counts)")
    if policy == "fail":
        raise PipelineError(f"{message}; raise {key} above {FEATURE_DIM} or set "
                            f"evaluate.low_sample_fid: warn")
    log.warning(message)
    return True
