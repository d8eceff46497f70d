"""evaluate: teacher, full student and every searched configuration side by side
(pipeline/evaluation.py): FID/KID/LPIPS, parameters, MACs, latency in PyTorch, ONNX
Runtime and ExecuTorch, and the 1024x1024 teacher/student latency ratio.

Reads the ``evaluate`` section of params.yaml, ``artifacts/teacher``,
``artifacts/student`` and ``artifacts/search/configs.json`` (optional); writes
``metrics/evaluate.json``, ``plots/evaluate/*.csv`` and ``artifacts/evaluate/``
(report.md, grid.png, pareto.png).
"""

from __future__ import annotations

import sys

from pipeline import tracking
from pipeline.io import write_json
from pipeline.params import flatten, load_params

from ._cli import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("evaluate", __doc__)
    parser.add_argument("--teacher", default="artifacts/teacher/teacher.safetensors")
    parser.add_argument("--student", default="artifacts/student/student.safetensors")
    parser.add_argument("--search", default="artifacts/search/configs.json",
                        help="searched configurations (optional)")
    parser.add_argument("--out", default="artifacts/evaluate", help="report folder")
    parser.add_argument("--plots", default="plots/evaluate", help="plot CSV folder")
    args = parser.parse_args(argv)

    def stage() -> None:
        from pipeline.evaluation import run_evaluate  # torch, metrics: after argument errors

        params = load_params(args.params)
        cfg = params.evaluate
        with tracking.stage_run("evaluate", cfg, tags={"profile": params.profile}) as tracker:
            metrics, tags = run_evaluate(cfg, args.teacher, args.student, args.search, args.out,
                                         args.plots, args.cache_dir, progress=not args.no_progress)
            write_json(args.metrics, metrics)
            tracker.log_metrics({k.replace("models.", "", 1): v
                                 for k, v in flatten(metrics).items()})
            tracker.set_tags(tags)
            for path in (args.out, args.plots, args.metrics):
                tracker.log_artifact(path, "evaluate")

    return run_stage("evaluate", stage)


if __name__ == "__main__":
    sys.exit(main())
