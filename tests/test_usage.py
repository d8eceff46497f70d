"""A stage's cost and progress: measured figures and the log lines a DVC run shows."""

from __future__ import annotations

import logging

import pytest

from pipeline import usage


def test_measured_reports_seconds_and_peak_memory():
    with usage.measured() as cost:
        block = bytearray(200 * 2**20)  # 200 MiB touched: the peak must see it
        block[::4096] = b"x" * len(block[::4096])
    assert cost["seconds"] >= 0 and cost["peak_rss_gb"] > 0.2
    assert "peak_gpu_gb" not in cost  # no CUDA here: no figure pretending to be one


def test_progress_without_a_terminal_logs_an_estimate_then_what_is_left(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.usage")
    bar = usage.Progress("distill", 4, "step", bar=False, every_s=0)
    for _ in range(4):
        bar.update(1, g="0.5")
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("distill: 1/4 step (the first 1 took") and "left" in lines[0]
    assert lines[-1].startswith("distill: 4/4 step") and "left" not in lines[-1]
    assert "g 0.5" in lines[0]


def test_quiet_progress_and_resumed_counts(caplog):
    caplog.set_level(logging.INFO, logger="pipeline.usage")
    usage.Progress("distill", 4, "step", bar=False, quiet=True).update(1)
    assert not caplog.records  # another process reports
    usage.Progress("distill", 10, "step", bar=False, initial=8).update(1)
    assert caplog.records[0].getMessage().startswith("distill: 9/10 step (the first 1 took")


@pytest.mark.parametrize("seconds,text", [(42, "42 s"), (450, "7.5 min"), (11520, "3.2 h")])
def test_durations_read_naturally(seconds, text):
    assert usage.duration(seconds) == text
