"""``python -m pipeline.bench``: the benchmark table (and JSON) for checkpoints or config-f
pairs, or with ``--profile`` their time per operator type; ``python -m pipeline.bench
latency-table``: the search's latency model of a student (pipeline.bench.latency). Bad
arguments exit 2 with one line."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from ..cli import Parser, positive
from ..errors import PipelineError
from ..io import write_json
from ..models.stylegan2 import Generator
from ..params import split_latency_model
from .profile import op_table, profile, write_csv
from .runtimes import REDUCED_PRECISION, RUNTIMES, check_runtimes
from .suite import bench, ratios, table
from .targets import RANDOM_WEIGHTS, config_f_pair
from .timing import BenchError


def _jsonable(x: Any) -> Any:  # JSON has no inf / nan: null
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch must be an integer or a comma list, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--batch must be positive, got {text!r}")
    return sorted({1, *values}) if len(values) == 1 else sorted(set(values))


def _thread_counts(text: str) -> list[int]:
    counts = [_positive(v.strip()) for v in text.split(",") if v.strip()]
    if not counts:
        raise argparse.ArgumentTypeError(f"expected a thread count or a comma list, got {text!r}")
    return list(dict.fromkeys(counts))


_positive = positive(int)


def _load_models(args: argparse.Namespace) -> tuple[dict[str, Any], Generator | None]:
    from ..checkpoints import load_teacher
    from ..checkpoints.project import load_student

    for flag in ("student", "teacher"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise BenchError(f"--{flag}: no such file: {path}")
    models: dict[str, Any] = {}
    teacher = student = None
    if args.config_f is not None:
        r = args.config_f
        if r < 8 or r > 4096 or r & (r - 1):
            raise BenchError(f"--config-f: resolution must be a power of two in [8, 4096], got {r}")
        teacher, student = config_f_pair(r, args.channel_multiplier, args.seed,
                                         channel_max=args.channel_max)
    if args.teacher is not None:
        teacher = load_teacher(args.teacher).generator
    if args.student is not None:
        student = load_student(args.student)[0]
    if teacher is None and student is None:
        raise BenchError("nothing to benchmark: give --student and/or --teacher, or --config-f RES")
    if teacher is not None:
        models["teacher"] = teacher
    if student is not None:
        if teacher is not None and (student.cfg.style_dim != teacher.cfg.style_dim
                                    or student.cfg.resolution > teacher.cfg.resolution):
            raise BenchError(f"the student ({student.cfg.resolution}px, style_dim {student.cfg.style_dim})"
                             f" does not fit the teacher ({teacher.cfg.resolution}px, "
                             f"style_dim {teacher.cfg.style_dim})")
        models["student"] = student
    return models, teacher


def latency_table(argv: list[str]) -> int:
    """``python -m pipeline.bench latency-table``: the search's latency model of a student
    measured on this machine (the target device), for ``search.latency.tables``."""
    from ..checkpoints.project import load_student
    from ..params import Search
    from . import latency

    defaults = Search.model_fields
    parser = Parser(prog="python -m pipeline.bench latency-table",
                     description=latency.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True, help="student checkpoint (distill's output)")
    parser.add_argument("--runtime", required=True, choices=latency.MODELS,
                        help="-int8: the files quantized as the export stage does")
    parser.add_argument("--out", required=True, help="the table (JSON)")
    parser.add_argument("--ratios", default=",".join(map(str, defaults["ratios"].default)),
                        help="per-layer channel ratios, as search.ratios (%(default)s)")
    parser.add_argument("--min-resolution", type=_positive, default=None,
                        help="as search.min_resolution (default: the full resolution only)")
    parser.add_argument("--threads", type=_positive, default=1, help="threads (1)")
    parser.add_argument("--grid", type=_positive, default=2,
                        help="widths measured per layer, ends included (2); the others "
                             "interpolated; 1: every choice")
    parser.add_argument("--holdout", type=_positive, default=4, help="configurations checked (4)")
    parser.add_argument("--repeats", type=_positive, default=10, help="timed runs (10)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        if not Path(args.student).is_file():
            raise BenchError(f"--student: no such file: {args.student}")
        try:
            ratios = [float(r) for r in args.ratios.split(",") if r.strip()]
        except ValueError:
            raise BenchError(f"--ratios: expected numbers in (0, 1], got {args.ratios!r}") from None
        if not ratios or not all(0 < r <= 1 for r in ratios):
            raise BenchError(f"--ratios: expected numbers in (0, 1], got {args.ratios!r}")
        cfg = load_student(args.student)[0].cfg
        if args.min_resolution and args.min_resolution not in latency.resolutions_of(cfg, 8):
            raise BenchError(f"--min-resolution: one of {latency.resolutions_of(cfg, 8)}")
        runtime, precision = split_latency_model(args.runtime)
        model = latency.build_model(cfg, latency.widths_choices(cfg, ratios),
                                    latency.resolutions_of(cfg, args.min_resolution), runtime,
                                    args.threads, args.grid if args.grid > 1 else None,
                                    args.holdout, args.repeats, args.seed, precision)
    except PipelineError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    write_json(args.out, model.to_json())
    print(f"{args.runtime}: {len(model.entries)} layer entries, model error on "
          f"{len(model.check['configs'])} held-out configurations: median "
          f"{100 * model.check['median_abs_err']:.1f} %, max {100 * model.check['max_abs_err']:.1f} % "
          f"({model.seconds:.0f} s) -> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["latency-table"]:
        return latency_table(argv[1:])
    description = sys.modules[__package__].__doc__  # the package's: what is timed, and how
    parser = Parser(prog="python -m pipeline.bench", description=description,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group("models (a teacher and a student also give their latency ratio)")
    src.add_argument("--student", help="student checkpoint (project safetensors, distill's output)")
    src.add_argument("--teacher", help="teacher checkpoint (any format fetch_teacher reads)")
    src.add_argument("--config-f", type=_positive, metavar="RES",
                     help="a config-f teacher at RES with random weights and its default full "
                          "student (speed only); --teacher/--student replace either")
    src.add_argument("--channel-multiplier", type=_positive, default=2, help="for --config-f (2)")
    src.add_argument("--channel-max", type=_positive, default=512,
                     help="for --config-f: channel cap (512, config-f's; smaller for quick tries)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help=f"comma list of {', '.join(RUNTIMES + REDUCED_PRECISION)} "
                        f"(default: {', '.join(RUNTIMES)})")
    parser.add_argument("--batch", type=_batches, default=[1],
                        help="B: batch sizes 1 and B (or a comma list); default 1")
    parser.add_argument("--threads", type=_thread_counts, default=[None],
                        help="threads for every runtime, or a comma list (1,2: the whole "
                             "benchmark once per count; default: torch's count, the usable cores)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (1)")
    parser.add_argument("--repeats", type=_positive, default=5,
                        help="timed rounds at least (5): every model once per round, in turn")
    parser.add_argument("--seconds", type=float, default=None,
                        help="more rounds until this many seconds per runtime and batch size")
    parser.add_argument("--workers", type=_positive, default=None,
                        help="models whose files are written at once, one process each "
                             "(default: one per usable core)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch and ORT's CUDA EP)")
    parser.add_argument("--workdir", help="keep exported files here (default: a temporary folder)")
    parser.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    parser.add_argument("--seed", type=int, default=0, help="random weights and inputs")
    parser.add_argument("--profile", action="store_true",
                        help="instead of the latency table: the time per operator type of each "
                             "model in each runtime, from the runtime's own profiler (batch 1, "
                             "--repeats runs after --warmup 1)")
    parser.add_argument("--csv", metavar="OUT", help="with --profile: write its table as CSV")
    args = parser.parse_args(argv)
    try:
        runtimes = check_runtimes(args.runtimes)
        if args.warmup < 0:
            raise BenchError(f"--warmup must be >= 0, got {args.warmup}")
        if args.seconds is not None and not 0 <= args.seconds <= 3600:
            raise BenchError(f"--seconds must be in [0, 3600], got {args.seconds}")
        if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
            raise BenchError(f"--device {args.device!r}: use cpu, or cuda on a machine with CUDA")
        if args.csv and not args.profile:
            raise BenchError("--csv writes the --profile table: add --profile")
        models, teacher = _load_models(args)
        if args.profile and len(args.threads) > 1:
            raise BenchError("--profile takes one --threads count")
        if args.profile:
            result = profile(models, runtimes, args.repeats, args.threads[0], args.workdir,
                             device=args.device, teacher=teacher, seed=args.seed)
            print(op_table(result))
            _write(args.json, result)
            if args.csv:
                Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
                write_csv(result, args.csv)
            return 0
        results = {}
        for threads in args.threads:
            result = bench(models, runtimes, args.batch, args.warmup, args.repeats, threads,
                           args.workdir, device=args.device, teacher=teacher, seed=args.seed,
                           seconds=args.seconds, workers=args.workers)
            ratio = None
            if {"teacher", "student"} <= set(models):
                ratio = ratios(result)
                if args.config_f is not None and args.teacher is None:
                    ratio["weights"] = RANDOM_WEIGHTS
                result["ratio"] = ratio
            print(table(result, ratio) + "\n")
            results[str(result["threads"])] = result
    except PipelineError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    # one count: the result itself (as before); several: {"by_threads": {count: result}}
    _write(args.json, result if len(results) == 1 else {"by_threads": results})
    return 0


def _write(path: str | None, result: dict[str, Any]) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(_jsonable(result), indent=2) + "\n")
