"""The benchmark: :func:`bench` times every model in every runtime at every batch size in
one process; :func:`ratios` and :func:`latency_ratio_1024` give the teacher/student
latency ratio; :func:`evaluate_latency` is the evaluate stage's entry point; :func:`table`
prints a result."""

from __future__ import annotations

import contextlib
import math
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..models.stylegan2 import Generator
from ..workers import run_all, worker_count
from .machine import machine_info, machine_text, matmul_rates
from .runtimes import OPSET, REDUCED_PRECISION, RUNTIMES, check_runtimes, open_runtime, reason, write_files
from .targets import RANDOM_WEIGHTS, Target, config_f_pair, prepare
from .timing import BenchError, check_rounds, interleave, round_ratio, summary, using_threads

MOBILESTYLEGAN_MAC_RATIO = 9.5  # the paper's teacher/student MAC ratio at 1024


def check_batches(batch_sizes: Sequence[int]) -> list[int]:
    if not batch_sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1
                              for b in batch_sizes):
        raise BenchError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    return sorted(set(batch_sizes))


def batch_key(batch: int) -> str:
    return f"batch_{batch}"


# -- the benchmark ------------------------------------------------------------------------
def bench(models: Mapping[str, Any], runtimes: Sequence[str] = RUNTIMES,
          batch_sizes: Sequence[int] = (1, 8), warmup: int = 2, repeats: int = 10,
          threads: int | None = None, workdir: str | Path | None = None, *,
          device: str = "cpu", teacher: Generator | None = None, peak_n: int | None = None,
          opset: int = OPSET, seed: int = 0, seconds: float | None = None,
          profile_models: Sequence[str] = (), profile_runs: int = 3,
          workers: int | None = 1) -> dict[str, Any]:
    """Time every model in every runtime at every batch size, in this process.

    ``models``: name -> Generator / MobileSynthesis / StyleGAN2Config / StudentConfig /
    :class:`Target` (see :func:`prepare`; ``teacher`` gives students their W+ layout and
    noise). The models of one runtime and batch size are timed in alternating rounds
    (:func:`~pipeline.bench.timing.interleave`): ``warmup`` untimed rounds, then at least
    ``repeats`` rounds, more until ``seconds`` (a budget per runtime and batch size) are
    spent. ``threads``: for every runtime (None: torch's current count). ``workdir``: where
    exported files go (None: a temporary folder, removed afterwards). ``profile_models``:
    also profile these per operator type (pipeline.bench.profile, batch 1, ``profile_runs``
    runs) in each runtime while their files are open, rather than exporting them again.
    Every model's files are written first, ``workers`` models at a time in worker processes
    (None: one per usable core; pipeline.workers), then timed here with nothing else running.

    Returns (layout: README "Benchmark")::

        {"machine": {...}, "machine_text": str, "device", "threads", "peak_gmacs",
         "peaks": {device: GMAC/s}, "matmul_gmacs": {device: {"mm", "onednn"}},
         "warmup", "repeats", "seconds", "batch_sizes", "runtimes",
         "models": {name: {runtime: {"batch_B": {"median_ms", "p90_ms", "mean_ms", "min_ms",
                                                 "repeats", "gmacs_per_s", "efficiency"}}}},
         "rounds": {runtime: {"batch_B": {name: [ms of each round]}}},
         "model_info": {name: {"arch", "resolution", "macs", "params", "graph"}},
         "runtime_devices": {name: {runtime: str}},
         "parity": {name: {runtime: max abs difference to pytorch at batch 1}},
         "files": {name: {runtime: the file it ran (onnxruntime, executorch and -int8)}},
         "rows": [[name, runtime, batch, median_ms, p90_ms, gmacs_per_s, efficiency]],
         "skipped": {"name/runtime[/batch_B]": reason},
         "profiles": {name: {runtime: profile.per_run(...)}}, "profile_skipped": {...}}
    """
    runtimes = check_runtimes(runtimes)
    batch_sizes = check_batches(batch_sizes)
    check_rounds(warmup, repeats, seconds)
    if threads is not None and threads < 1:
        raise BenchError(f"threads must be >= 1, got {threads}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device {device!r} asked for, but CUDA is not available")
    targets = {name: prepare(m, teacher, seed) for name, m in models.items()}
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
        workdir = Path(workdir)
        n_threads = stack.enter_context(using_threads(
            threads, any(r.startswith("executorch") for r in runtimes)))
        rates = {"cpu": matmul_rates("cpu", n_threads, peak_n)}
        if str(device).startswith("cuda"):
            rates[str(device)] = matmul_rates(str(device), n_threads, peak_n)
        peaks = {dev: max(r.values()) for dev, r in rates.items()}
        result: dict[str, Any] = {
            "machine": machine_info(device), "device": str(device), "threads": n_threads,
            "peak_gmacs": peaks[str(device)], "peaks": peaks, "matmul_gmacs": rates,
            "warmup": warmup, "repeats": repeats, "seconds": seconds, "batch_sizes": batch_sizes,
            "runtimes": runtimes, "models": {}, "rounds": {}, "model_info": {},
            "runtime_devices": {}, "parity": {}, "files": {}, "rows": [], "skipped": {},
            "profiles": {}, "profile_skipped": {},
        }
        result["machine_text"] = machine_text(result["machine"])
        for name, target in targets.items():
            result["model_info"][name] = {"arch": target.arch, "resolution": target.resolution,
                                          "macs": target.macs, "params": target.params,
                                          **target.info}
        names = list(targets)
        files = run_all(write_files, [(targets[n], runtimes, workdir / n, opset) for n in names],
                        worker_count(workers, len(names)))
        written = dict(zip(names, files, strict=True))
        reference: dict[tuple[str, int], torch.Tensor] = {}  # pytorch's outputs, for parity
        for rt in runtimes:
            _bench_runtime(rt, targets, written, batch_sizes, warmup, repeats, seconds, n_threads,
                           workdir, str(device), peaks, opset, seed, reference, result,
                           {name: profile_runs for name in profile_models})
        result["rows"] = [[name, rt, int(key.removeprefix("batch_")), s["median_ms"], s["p90_ms"],
                           s["gmacs_per_s"], s["efficiency"]]
                          for name, by_rt in result["models"].items()
                          for rt, by_batch in by_rt.items() for key, s in by_batch.items()]
    return result


def _bench_runtime(rt: str, targets: Mapping[str, Target], written: Mapping[str, Mapping[str, Any]],
                   batch_sizes: list[int], warmup: int,
                   repeats: int, seconds: float | None, threads: int, workdir: Path, device: str,
                   peaks: dict[str, float], opset: int, seed: int,
                   reference: dict[tuple[str, int], torch.Tensor], result: dict[str, Any],
                   profiles: Mapping[str, int]) -> None:
    """Every model in runtime ``rt``: each opened (its file ``written`` ahead), then per
    batch size all of them timed in the same rounds; then the models in ``profiles``
    (name -> runs) profiled."""
    opened: dict[str, Any] = {}
    try:
        for name, target in targets.items():
            file = written[name][rt]
            if isinstance(file, str):  # could not be written: why
                result["skipped"][f"{name}/{rt}"] = file
                continue
            try:
                runtime = opened[name] = open_runtime(rt, target, workdir / name, device, threads,
                                                      opset, file)
            except Exception as e:  # not installed, or the model does not export to it
                result["skipped"][f"{name}/{rt}"] = reason(e)
                continue
            result["runtime_devices"].setdefault(name, {})[rt] = runtime.where
            if getattr(runtime, "path", None) is not None:
                result["files"].setdefault(name, {})[rt] = str(runtime.path)
        for batch in batch_sizes:
            runners = {}
            for name, runtime in opened.items():
                try:
                    fn = runtime.runner(targets[name].example(batch, seed))
                    out = torch.as_tensor(fn()).detach().float().cpu()
                except Exception as e:
                    result["skipped"][f"{name}/{rt}/{batch_key(batch)}"] = reason(e)
                    continue
                runners[name] = fn
                if rt == "pytorch":
                    reference[name, batch] = out
                elif (name, batch) in reference and batch == batch_sizes[0]:
                    result["parity"].setdefault(name, {})[rt] = float(
                        (out - reference[name, batch]).abs().max())
            if not runners:
                continue
            on = opened[next(iter(runners))].on
            try:
                times = interleave(runners, warmup, repeats, seconds, on)
            except Exception as e:
                for name in runners:
                    result["skipped"][f"{name}/{rt}/{batch_key(batch)}"] = reason(e)
                continue
            result["rounds"].setdefault(rt, {})[batch_key(batch)] = times
            for name, ms in times.items():
                stats: dict[str, Any] = summary(ms)
                macs = targets[name].macs
                gmacs = None if macs is None else macs * batch / (stats["median_ms"] / 1e3) / 1e9
                stats["gmacs_per_s"] = gmacs
                # the peak is fp32's: an int8 or fp16 file's rate against it says nothing (int8 can pass 100 %)
                stats["efficiency"] = (None if gmacs is None or rt in REDUCED_PRECISION
                                       else gmacs / peaks.get(on, peaks["cpu"]))
                result["models"].setdefault(name, {}).setdefault(rt, {})[batch_key(batch)] = stats
        for name, runs in profiles.items():
            if name in opened:
                _profile(name, rt, opened[name], targets[name].example(1, seed), runs, result)
    finally:
        for runtime in opened.values():
            runtime.close()


def _profile(name: str, rt: str, runtime: Any, x: torch.Tensor, runs: int,
             result: dict[str, Any]) -> None:
    from .profile import per_run  # it times what this module opens

    try:
        with warnings.catch_warnings():  # devtools warn of debug data we do not ask for
            warnings.simplefilter("ignore")
            result["profiles"].setdefault(name, {})[rt] = per_run(runtime.profile(x, runs))
    except Exception as e:  # no profiler here, or it failed
        result["profile_skipped"][f"{name}/{rt}"] = reason(e)


# -- the teacher / student ratio ----------------------------------------------------------
def ratios(result: Mapping[str, Any], teacher: str = "teacher", student: str = "student",
           batch: int = 1) -> dict[str, Any]:
    """Teacher / student latency per runtime from a :func:`bench` result: the median of the
    per-round ratios (both timed in the same rounds, so a load change between rounds cancels)
    with their p10-p90 spread, and the MAC ratio (pipeline.cost, physical) next to
    MobileStyleGAN's published 9.5x."""
    key = batch_key(batch)
    out: dict[str, Any] = {"runtimes": {}, "latency_ratio": {}, "latency_ratio_p10": {},
                           "latency_ratio_p90": {}}
    t_rt, s_rt = result["models"].get(teacher, {}), result["models"].get(student, {})
    for rt in result["runtimes"]:
        t, s = t_rt.get(rt, {}).get(key), s_rt.get(rt, {}).get(key)
        rounds = result.get("rounds", {}).get(rt, {}).get(key, {})
        if not (t and s and teacher in rounds and student in rounds):
            continue
        r = round_ratio(rounds[teacher], rounds[student])
        out["runtimes"][rt] = {"teacher_ms": t["median_ms"], "student_ms": s["median_ms"],
                               "teacher_p90_ms": t["p90_ms"], "student_p90_ms": s["p90_ms"],
                               "rounds": r["rounds"]}
        out["latency_ratio"][rt] = r["ratio"]
        out["latency_ratio_p10"][rt], out["latency_ratio_p90"][rt] = r["p10"], r["p90"]
    t_macs = result["model_info"].get(teacher, {}).get("macs")
    s_macs = result["model_info"].get(student, {}).get("macs")
    out["mac_ratio"] = t_macs / s_macs if t_macs and s_macs else None
    out["mac_ratio_mobilestylegan"] = MOBILESTYLEGAN_MAC_RATIO
    return out


def latency_ratio_1024(runtimes: Sequence[str] = RUNTIMES, resolution: int = 1024,
                       channel_multiplier: int = 2, warmup: int = 1, repeats: int = 3,
                       threads: int | None = None, workdir: str | Path | None = None, *,
                       device: str = "cpu", seed: int = 0, peak_n: int | None = None,
                       channel_max: int = 512, style_dim: int = 512, n_mlp: int = 8,
                       seconds: float | None = None, workers: int | None = 1) -> dict[str, Any]:
    """Config-f teacher (random weights: speed only) vs its default full student at
    ``resolution`` (1024 for the headline figure), batch 1, same run, same threads, timed
    in alternating rounds (at least ``repeats``, more until ``seconds`` per runtime).
    ``channel_max``, ``style_dim`` and ``n_mlp`` shrink it for tests (config-f: 512, 512, 8).

    Returns ``{"resolution", "channel_multiplier", "weights": "random (speed only)",
    "latency_ratio": {runtime: median per-round teacher ms / student ms},
    "latency_ratio_p10", "latency_ratio_p90": {runtime: spread}, "runtimes": {runtime:
    {"teacher_ms", "student_ms", "teacher_p90_ms", "student_p90_ms", "rounds"}}, "mac_ratio",
    "mac_ratio_mobilestylegan": 9.5, "teacher_macs", "student_macs", "threads",
    "peak_gmacs", "machine", "machine_text", "skipped", "bench": the full bench() result}``.
    """
    runtimes = check_runtimes(runtimes)
    teacher, student = config_f_pair(resolution, channel_multiplier, seed, style_dim, n_mlp, channel_max)
    result = bench({"teacher": teacher, "student": student}, runtimes, (1,), warmup, repeats,
                   threads, workdir, device=device, teacher=teacher, peak_n=peak_n, seed=seed,
                   seconds=seconds, workers=workers)
    info = result["model_info"]
    return {"resolution": resolution, "channel_multiplier": channel_multiplier,
            "channel_max": channel_max, "weights": RANDOM_WEIGHTS, **ratios(result),
            "teacher_macs": info["teacher"]["macs"], "student_macs": info["student"]["macs"],
            "threads": result["threads"], "peak_gmacs": result["peak_gmacs"],
            "machine": result["machine"], "machine_text": result["machine_text"],
            "skipped": result["skipped"], "bench": result}


# -- the evaluate stage's entry point -----------------------------------------------------
def evaluate_latency(cfg: Any, models: Sequence[Any], teacher: Generator,
                     workdir: str | Path, device: str = "cpu", calibration: torch.Tensor | None = None,
                     measurements: Path | None = None, profile_models: Sequence[str] = (),
                     ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Latency of the evaluate stage's models (objects with ``name``, ``module`` and
    ``cost["macs"]``) per ``cfg`` (params ``evaluate.latency``), and the config-f ratio at
    1024 (fp32 runtimes) when ``cfg.ratio_1024``. ``calibration``: the W+ int8 runtimes
    calibrate on. The models are measured every run (they change with the student); the
    1024 ratio depends only on the code, the runtimes and the machine, and is kept in
    ``measurements`` (pipeline.bench.measurements; None: measured every run).
    ``profile_models`` are also profiled per operator type (``cfg.profile_runs`` runs).
    Returns (:func:`bench` result, :func:`ratio_1024` result or None)."""
    targets = {}
    for m in models:
        t = prepare(m.module, teacher)
        macs = (getattr(m, "cost", None) or {}).get("macs")
        targets[m.name] = Target(t.net, t.arch, macs if macs is not None else t.macs, t.params,
                                 t.resolution, t.info, calibration)
    workdir = Path(workdir)
    latency = bench(targets, cfg.runtimes, cfg.batch_sizes, cfg.warmup, cfg.repeats, cfg.threads,
                    workdir / "models", device=device, teacher=teacher, seconds=cfg.seconds,
                    profile_models=profile_models,
                    profile_runs=cfg.profile_runs if profile_models else 0, workers=cfg.workers)
    ratio = None
    if cfg.ratio_1024:
        fp32 = [r for r in cfg.runtimes if r not in REDUCED_PRECISION]  # the ratio compares fp32 graphs
        # the configured threads first (the headline ratio), then each other count asked for
        counts = list(dict.fromkeys([cfg.threads, *cfg.ratio_threads]))
        ratio = ratio_1024(fp32, counts, min(cfg.warmup, 1), cfg.ratio_repeats, cfg.ratio_seconds,
                           workdir, device, measurements, cfg.workers)
    return latency, ratio


def ratio_1024(runtimes: Sequence[str], thread_counts: Sequence[int | None], warmup: int,
               repeats: int, seconds: float | None, workdir: Path, device: str = "cpu",
               measurements: Path | None = None, workers: int | None = 1) -> dict[str, Any]:
    """:func:`latency_ratio_1024` with each of ``thread_counts`` (the first is the headline),
    from the measurement store when this code, these runtimes and this machine measured it
    before. Adds ``by_threads`` ({count: {runtime: ratio}}, and ``_p10``/``_p90``),
    ``efficiency_by_threads`` and ``measured`` (pipeline.bench.measurements.provenance)."""
    from . import measurements as store

    counts = [n or torch.get_num_threads() for n in thread_counts]
    settings = {"runtimes": list(runtimes), "threads": counts, "warmup": warmup, "repeats": repeats,
                "seconds": seconds, "resolution": 1024, "channel_multiplier": 2, "device": str(device)}

    def measure() -> dict[str, Any]:
        runs = [latency_ratio_1024(runtimes, 1024, 2, warmup, repeats, n,
                                   workdir / f"ratio_1024_threads_{n}", device=device, seconds=seconds,
                                   workers=workers)
                for n in counts]
        ratio = runs[0]
        for part in ("", "_p10", "_p90"):
            ratio[f"by_threads{part}"] = {str(r["threads"]): r[f"latency_ratio{part}"] for r in runs}
        ratio["efficiency_by_threads"] = {str(r["threads"]): student_efficiency(r["bench"]) for r in runs}
        return ratio

    key = store.key("ratio_1024", settings, __name__)
    ratio, made = store.cached(measurements, key, measure)
    return {**ratio, "measured": made}


def student_efficiency(result: Mapping[str, Any], student: str = "student") -> dict[str, float]:
    """A model's achieved GMAC/s at batch 1 over the run's matmul peak, per runtime, from a
    :func:`bench` result."""
    student = result["models"].get(student, {})
    return {rt: figures["batch_1"]["efficiency"] for rt, figures in student.items()
            if figures.get("batch_1", {}).get("efficiency") is not None}


# -- output -------------------------------------------------------------------------------
def _f(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def table(result: Mapping[str, Any], ratio: Mapping[str, Any] | None = None) -> str:
    """The human-readable table of a :func:`bench` result (and of :func:`ratios`)."""
    lines = [f"machine: {result['machine_text']}",
             f"threads: {result['threads']}; device: {result['device']}; measured fp32 matmul peak "
             f"{_f(result['peak_gmacs'], '.1f')} GMAC/s; warm-up {result['warmup']} round(s), then "
             f"at least {result['repeats']} timed rounds"
             + (f", more until {result['seconds']:g} s" if result.get("seconds") else "")
             + " (every model of a runtime in turn)"]
    header = ["model", "runtime", "batch", "median ms", "p90 ms", "GMAC/s", "efficiency"]
    rows = [[str(name), rt, str(b), _f(med, ".2f"), _f(p90, ".2f"), _f(g, ".2f"),
             _f(None if e is None else 100 * e, ".1f") + ("%" if e is not None else "")]
            for name, rt, b, med, p90, g, e in result["rows"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    lines += ["", fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    if ratio and ratio.get("latency_ratio"):
        efficiency = student_efficiency(result)
        lines += ["", f"teacher / student latency ratio (batch 1, same run, {result['threads']} "
                  "threads; median of the per-round ratios, p10-p90; student efficiency):"]
        for rt, r in ratio["latency_ratio"].items():
            ms = ratio["runtimes"][rt]
            eff = efficiency.get(rt)
            lines.append(f"  {rt:<16} {r:6.2f}x  [{ratio['latency_ratio_p10'][rt]:.2f}-"
                         f"{ratio['latency_ratio_p90'][rt]:.2f}, {ms['rounds']} rounds]   "
                         f"({ms['teacher_ms']:.2f} ms / {ms['student_ms']:.2f} ms)"
                         + (f"   student at {100 * eff:.1f}% of peak" if eff is not None else ""))
        lines.append(f"  MACs (pipeline.cost, physical): {_f(ratio.get('mac_ratio'), '.2f')}x; "
                     f"MobileStyleGAN's paper: {MOBILESTYLEGAN_MAC_RATIO}x")
        if ratio.get("weights"):
            lines.append(f"  weights: {ratio['weights']}")
    if result["skipped"]:
        lines += ["", "not measured:"] + [f"  {k}: {v}" for k, v in result["skipped"].items()]
    return "\n".join(lines)
