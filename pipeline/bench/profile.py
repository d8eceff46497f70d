"""Where the time goes: each model's time per operator type in each runtime, from the
runtime's own profiler (``torch.profiler`` for eager, ONNX Runtime's session profiling,
ExecuTorch's ETDump read by the devtools Inspector), for the same networks :func:`bench`
times. ``python -m pipeline.bench --profile`` prints it; the evaluate stage saves it.

Operator types are the runtime's own names: aten operators in PyTorch, the optimised
graph's node types in ONNX Runtime (``FusedConv``, ``ReorderInput``...), XNNPACK's
operators in ExecuTorch (``Convolution (NHWC, F32) DWConv``...). ``(other)`` is the part of
a run no operator accounts for (dispatch, the delegate's own work, Python in eager), so
the shares of a run add up to 1.
"""

from __future__ import annotations

import contextlib
import csv
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..models.stylegan2 import Generator
from .runtimes import OPSET, RUNTIMES, OpTimes, check_runtimes, open_runtime, reason
from .targets import prepare
from .timing import BenchError, using_threads

OTHER = "(other)"
CSV_COLUMNS = ["model", "runtime", "op", "ms", "share", "calls"]


def per_run(times: OpTimes) -> dict[str, Any]:
    """``{"total_ms", "ops": [{"op", "ms", "share", "calls"}]}`` per run, slowest first,
    with ``(other)`` for the rest of the run."""
    runs = max(times.runs, 1)
    measured = sum(ms for ms, _ in times.ops.values())
    total = max(times.total_ms, measured)
    rows = [{"op": op, "ms": ms / runs, "calls": calls / runs} for op, (ms, calls) in times.ops.items()]
    if total > measured:
        rows.append({"op": OTHER, "ms": (total - measured) / runs, "calls": 0})
    for row in rows:
        row["share"] = row["ms"] * runs / total if total > 0 else 0.0
    return {"total_ms": total / runs, "ops": sorted(rows, key=lambda r: -r["ms"])}


def profile(models: Mapping[str, Any], runtimes: Sequence[str] = RUNTIMES, runs: int = 3,
            threads: int | None = None, workdir: str | Path | None = None, *,
            device: str = "cpu", teacher: Generator | None = None, seed: int = 0) -> dict[str, Any]:
    """Profile every model (as :func:`bench` takes them) in every runtime, batch 1, after
    one warm-up call. Returns ``{"threads", "runs", "runtimes", "profiles": {model:
    {runtime: per_run(...)}}, "skipped": {"model/runtime": reason}}``."""
    runtimes = check_runtimes(runtimes)
    if runs < 1:
        raise BenchError(f"profile runs must be >= 1, got {runs}")
    targets = {name: prepare(m, teacher, seed, check=False) for name, m in models.items()}
    result: dict[str, Any] = {"runs": runs, "runtimes": runtimes, "profiles": {}, "skipped": {}}
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="profile-"))
        result["threads"] = stack.enter_context(using_threads(
            threads, any(r.startswith("executorch") for r in runtimes)))
        for name, target in targets.items():
            folder = Path(workdir) / name
            folder.mkdir(parents=True, exist_ok=True)
            x = target.example(1, seed)
            for rt in runtimes:
                try:
                    runtime = open_runtime(rt, target, folder, device, result["threads"], OPSET)
                    try:
                        with warnings.catch_warnings():  # devtools warn of debug data we do not ask for
                            warnings.simplefilter("ignore")
                            times = runtime.profile(x, runs)
                    finally:
                        runtime.close()
                except Exception as e:  # not installed, does not export, no profiler here
                    result["skipped"][f"{name}/{rt}"] = reason(e)
                    continue
                result["profiles"].setdefault(name, {})[rt] = per_run(times)
    return result


def rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per model, runtime and operator type (CSV_COLUMNS)."""
    return [{"model": model, "runtime": rt, **op} for model, per_rt in result["profiles"].items()
            for rt, prof in per_rt.items() for op in prof["ops"]]


def write_csv(result: Mapping[str, Any], path: str | Path) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_COLUMNS)
        writer.writeheader()
        for row in rows(result):
            writer.writerow({**row, "ms": f"{row['ms']:.6g}", "share": f"{row['share']:.4f}",
                             "calls": f"{row['calls']:g}"})


def top(prof: Mapping[str, Any], n: int = 3) -> list[dict[str, Any]]:
    """The ``n`` slowest operator types of one profile (``(other)`` included)."""
    return list(prof["ops"][:n])


def op_table(result: Mapping[str, Any], limit: int | None = 12) -> str:
    """The printed profile: per model and runtime, its operator types, slowest first."""
    lines = [f"time per operator type (batch 1, {result['threads']} threads, mean of "
             f"{result['runs']} profiled runs; each runtime's own profiler)"]
    for model, per_rt in result["profiles"].items():
        for rt, prof in per_rt.items():
            lines += ["", f"{model} / {rt}: {prof['total_ms']:.3f} ms per run"]
            shown = prof["ops"] if limit is None else prof["ops"][:limit]
            width = max(len(op["op"]) for op in shown)
            lines += [f"  {op['op']:<{width}}  {op['ms']:10.3f} ms  {100 * op['share']:5.1f}%"
                      f"  {op['calls']:6g} calls" for op in shown]
            if len(prof["ops"]) > len(shown):
                rest = prof["ops"][len(shown):]
                lines.append(f"  ... {len(rest)} more: {sum(o['ms'] for o in rest):.3f} ms, "
                             f"{100 * sum(o['share'] for o in rest):.1f}%")
    if result["skipped"]:
        lines += ["", "not profiled:"] + [f"  {k}: {v}" for k, v in result["skipped"].items()]
    return "\n".join(lines)
