"""What a stage costs and will cost: wall seconds and peak memory after it ran, and an
estimate before its long part starts.

Every stage's metrics (and its MLflow run) get ``seconds``, ``peak_rss_gb`` (the
process's resident-set peak: a stage CLI is one process, so this is the stage's) and,
when it used a GPU, ``peak_gpu_gb`` (``torch.cuda.max_memory_allocated``). Estimates
come from timing one unit of the real work on this device (the search's scoring of the
full student, the first step or chunk of a :class:`Progress`), so they follow the
resolution, the models and the machine.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

log = logging.getLogger(__name__)

GB = 1e9


def peak_rss_gb() -> float:
    """This process's peak resident set so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / GB


@contextmanager
def measured() -> Iterator[dict[str, float]]:
    """Fills the yielded dict with ``seconds``, ``peak_rss_gb`` and, on a GPU,
    ``peak_gpu_gb`` when the block ends."""
    figures: dict[str, float] = {}
    if _cuda_used():  # else the stage initialises CUDA itself: its peak counts from zero
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        yield figures
    finally:
        figures["seconds"] = round(time.perf_counter() - start, 2)
        figures["peak_rss_gb"] = round(peak_rss_gb(), 3)
        if _cuda_used():
            figures["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / GB, 3)


def _cuda_used() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_initialized()


def seconds_per_call(fn: Callable[[], Any], device: torch.device | str) -> float:
    """Wall seconds of one call of ``fn`` (after the device finished its work)."""
    start = time.perf_counter()
    fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def duration(seconds: float) -> str:
    """``42 s``, ``7.5 min``, ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def announce(stage: str, workload: str, seconds: float | None = None, basis: str = "") -> None:
    """One line before the long part: what will run and, when measured, how long it should
    take (``basis`` says what the estimate was timed on)."""
    eta = f": about {duration(seconds)}" + (f" ({basis})" if basis else "") if seconds else ""
    log.info("%s: %s%s", stage, workload, eta)


class Progress:
    """Progress of a long loop: a tqdm bar on a terminal; without one (DVC runs the stages
    with ``--no-progress``) a log line after the first unit, the estimate of the whole timed
    on real work, then one every ``every_s`` seconds with what is left."""

    def __init__(self, stage: str, total: int, unit: str, bar: bool = True, initial: int = 0,
                 every_s: float = 60.0, quiet: bool = False) -> None:
        from tqdm import tqdm

        self.stage, self.total, self.unit, self.every_s = stage, total, unit, every_s
        self.quiet = quiet  # another process reports (torchrun ranks > 0)
        self.done = self.start = initial
        self.t0 = self.last = time.perf_counter()
        self.bar = tqdm(total=total, initial=initial, desc=stage, unit=unit,
                        dynamic_ncols=True) if bar and not quiet else None

    def update(self, n: int = 1, **postfix: str) -> None:
        self.done += n
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix)
            self.bar.update(n)
            return
        if self.quiet:
            return
        now = time.perf_counter()
        first = self.done - n == self.start
        if first or now - self.last >= self.every_s or self.done == self.total:
            self.last = now
            rate = (self.done - self.start) / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate else 0.0
            extra = "".join(f", {k} {v}" for k, v in postfix.items())
            what = f"the first {n} took {duration(now - self.t0)}" if first else (
                f"{rate:.3g} {self.unit}/s")
            log.info("%s: %d/%d %s (%s%s)%s", self.stage, self.done, self.total, self.unit, what,
                     extra, f": about {duration(left)} left" if self.done < self.total else "")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
