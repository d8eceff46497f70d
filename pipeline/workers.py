"""Independent jobs spread over worker processes, one per usable core.

What this is for: writing model files. ``torch.export``, the ONNX exporter, ExecuTorch's
lowering passes and coremltools are single-threaded Python for seconds per file, so a
stage that writes dozens of files leaves all cores but one idle. Each job runs in a fresh
(spawned, not forked: torch's thread pools do not survive a fork) process with one torch
thread; jobs and their results travel by pickle (modules and tensors do).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_count(asked: int | None, jobs: int) -> int:
    """``asked`` workers (None: one per usable core), never more than there are jobs."""
    return max(1, min(jobs, asked or usable_cores()))


def _init_worker(log_format: str | None) -> None:
    import torch

    torch.set_num_threads(1)  # the cores are shared out between the workers
    if log_format:
        from .redaction import ScrubbingFilter

        logging.basicConfig(level=logging.INFO, format=log_format)
        for handler in logging.getLogger().handlers:
            handler.addFilter(ScrubbingFilter())


def run_all(fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], workers: int = 1) -> list[T]:
    """``fn(*args)`` for every ``args`` in ``jobs``, results in order: in this process when
    ``workers`` is 1, else in that many worker processes. The first job to raise stops the
    rest (queued jobs are cancelled, running ones killed) and its exception is raised here;
    so does Ctrl-C or SIGTERM in this process."""
    if workers <= 1 or len(jobs) <= 1:
        return [fn(*args) for args in jobs]
    handlers = logging.getLogger().handlers
    log_format = handlers[0].formatter._fmt if handlers and handlers[0].formatter else None
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(log_format,))
    futures: list[Future] = []
    try:
        futures = [pool.submit(_call, pickle.dumps((fn, args))) for args in jobs]
        return [pickle.loads(f.result()) for f in futures]
    except BaseException:
        for f in futures:
            f.cancel()
        for process in list((pool._processes or {}).values()):  # running jobs: no need to finish
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _call(job: bytes) -> bytes:
    """A job and its result travel as plain pickles (tensors copied into the bytes):
    multiprocessing's own pickler would pass tensors through shared memory and a socket in
    a temporary folder (whose path can be too long for a socket, and outlive the stage).
    Safe to unpickle: the bytes come from this process or the workers it spawned, through
    a pipe, never from a file (downloaded checkpoints go through the restricted loaders)."""
    fn, args = pickle.loads(job)
    return pickle.dumps(fn(*args))
