"""Timing: :func:`interleave` (several calls timed in alternating rounds after warm-up, for
as many rounds as a budget in seconds allows), :func:`measure` (one call on its own),
:func:`round_ratio` (the ratio of two calls from their rounds), device synchronisation, and
the thread count every runtime shares (:func:`using_threads`).

Why rounds: on a shared machine the load changes while a benchmark runs. Timing the
teacher's N calls, then the student's, puts a load change between them straight into
their ratio; timing one call of each in turn puts both through the same load, so the
per-round ratio holds, and its median over rounds shrugs off the rounds that a burst hit.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import PipelineError

Clock = Callable[[], float]  # seconds, monotonic (time.perf_counter; tests pass a fake one)
MAX_ROUNDS = 10_000  # a budget in seconds over calls of microseconds stops here


class BenchError(PipelineError):
    """Bad benchmark arguments (unknown runtime, impossible batch, missing file)."""


def _sync(device: str) -> Callable[[], None]:
    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def check_rounds(warmup: int, repeats: int, seconds: float | None = None) -> None:
    if warmup < 0 or repeats < 1 or (seconds is not None and not seconds >= 0):
        raise BenchError(f"warmup must be >= 0, repeats >= 1 and seconds >= 0, got {warmup}, "
                         f"{repeats}, {seconds}")


def interleave(fns: Mapping[str, Callable[[], Any]], warmup: int = 1, repeats: int = 5,
               seconds: float | None = None, device: str = "cpu",
               clock: Clock = time.perf_counter) -> dict[str, list[float]]:
    """Time every call of ``fns`` in alternating rounds: ``warmup`` untimed rounds, then
    rounds in which each call runs once, timed on its own (ms), the order reversed every
    other round so that none always runs first. At least ``repeats`` rounds; with
    ``seconds``, more until that much time has gone on timed rounds (at most MAX_ROUNDS).
    Returns name -> the call's time in each round (round i of every call side by side)."""
    check_rounds(warmup, repeats, seconds)
    sync = _sync(device)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    sync()
    times: dict[str, list[float]] = {name: [] for name in names}
    spent, rounds = 0.0, 0
    while rounds < repeats or (seconds is not None and spent < seconds and rounds < MAX_ROUNDS):
        for name in names if rounds % 2 == 0 else reversed(names):
            start = clock()
            fns[name]()
            sync()
            elapsed = clock() - start
            times[name].append(elapsed * 1e3)
            spent += elapsed
        rounds += 1
    return times


def summary(times: Sequence[float]) -> dict[str, float]:
    """median / p90 / mean / min (ms) of timed calls, and their count (``repeats``)."""
    t = np.asarray(times, dtype=float)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "min_ms": float(t.min()), "repeats": len(t)}


def measure(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10, device: str = "cpu",
            seconds: float | None = None, clock: Clock = time.perf_counter) -> dict[str, float]:
    """Time ``fn()`` on its own: ``warmup`` untimed calls, then at least ``repeats`` timed
    ones (more until ``seconds`` are spent), each on its own (CUDA synchronised around
    each call on a GPU); :func:`summary` of them. Comparing two calls? :func:`interleave`."""
    return summary(interleave({"fn": fn}, warmup, repeats, seconds, device, clock)["fn"])


def round_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """The ratio of two calls timed in the same rounds (:func:`interleave`): the median of
    the per-round ratios, their p10 and p90 (the spread), and the rounds counted."""
    if len(numerator) != len(denominator) or not len(numerator):
        raise BenchError(f"a round ratio needs the same rounds of both calls, got "
                         f"{len(numerator)} and {len(denominator)}")
    r = np.asarray(numerator, dtype=float) / np.asarray(denominator, dtype=float)
    return {"ratio": float(np.median(r)), "p10": float(np.percentile(r, 10)),
            "p90": float(np.percentile(r, 90)), "rounds": len(r)}


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
