"""pipeline.workers: jobs in worker processes, results in order, the first error raised here."""

from __future__ import annotations

import pytest
import torch

from pipeline.workers import run_all, worker_count


def test_jobs_run_in_workers_and_come_back_in_order_with_tensors():
    x = torch.arange(6.0)
    out = run_all(torch.mul, [(x, 2.0), (x, 3.0), (x, -1.0)], workers=2)
    assert [o.tolist() for o in out] == [(x * k).tolist() for k in (2.0, 3.0, -1.0)]
    assert run_all(pow, [(2, 3), (3, 2)], workers=1) == [8, 9]  # one worker: in this process


def test_the_first_error_is_raised_here():
    with pytest.raises(ZeroDivisionError):
        run_all(divmod, [(7, 2), (1, 0), (9, 4)], workers=2)


def test_never_more_workers_than_jobs():
    assert worker_count(8, 3) == 3 and worker_count(None, 1) == 1 and worker_count(2, 0) == 1
