"""Timing: :func:`measure` (warm-up, then each timed call on its own), device
synchronisation, and the thread count every runtime shares (:func:`using_threads`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from ..errors import PipelineError


class BenchError(PipelineError):
    """Bad benchmark arguments (unknown runtime, impossible batch, missing file)."""


def _sync(device: str) -> Callable[[], None]:
    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def measure(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10,
            device: str = "cpu") -> dict[str, float]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones, each on its own
    (``time.perf_counter``; CUDA synchronised before and after each call on a GPU)."""
    if warmup < 0 or repeats < 1:
        raise BenchError(f"warmup must be >= 0 and repeats >= 1, got {warmup}, {repeats}")
    sync = _sync(device)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "min_ms": float(t.min()), "repeats": repeats}


@contextlib.contextmanager
def using_threads(threads: int | None, executorch: bool = False) -> Iterator[int]:
    """torch's intra-op threads (and ExecuTorch's pool) set to ``threads`` for the block."""
    old = torch.get_num_threads()
    n = threads or old
    torch.set_num_threads(n)
    et = _executorch_threads(n) if executorch else None
    try:
        yield n
    finally:
        torch.set_num_threads(old)
        if et is not None:
            _executorch_threads(et)


def _executorch_threads(n: int) -> int | None:
    """Set ExecuTorch's CPU thread pool to ``n``; returns the previous size (None: no pool)."""
    try:
        from executorch.extension.pybindings import portable_lib
    except Exception:
        return None
    try:
        old = portable_lib._threadpool_get_thread_count()
        if old != n:
            portable_lib._unsafe_reset_threadpool(n)
        return old
    except Exception:
        return None
