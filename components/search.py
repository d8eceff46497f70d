"""search: evolutionary search of student sub-networks under MAC budgets (pipeline/search.py).

Reads the ``search`` section of params.yaml, ``artifacts/student`` and
``artifacts/teacher``; writes ``artifacts/search/`` (configs.json: per budget the
channels, output resolution, MACs, parameters and distances, with the uniform-ratio
baseline; pareto.png), ``metrics/search.json`` and ``plots/search/pareto.csv``.
"""

from __future__ import annotations

import sys

from pipeline import tracking
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.search import flat_metrics, run_search

from ._cli import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("search", __doc__)
    parser.add_argument("--student", default="artifacts/student/student.safetensors")
    parser.add_argument("--teacher", default="artifacts/teacher/teacher.safetensors")
    parser.add_argument("--out", default="artifacts/search", help="output folder")
    parser.add_argument("--plots", default="plots/search", help="Pareto CSV folder")
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        cfg = params.search
        with tracking.stage_run("search", cfg, tags={"profile": params.profile}) as tracker:
            metrics = run_search(cfg, args.student, args.teacher, args.out, args.plots,
                                 args.cache_dir, tracker, progress=not args.no_progress)
            write_json(args.metrics, metrics)
            stand_in = bool(metrics["stand_in_lpips"])
            tracker.log_metrics(flat_metrics(metrics, stand_in))
            tracker.set_tags({"stand_in_weights": str(stand_in).lower()})
            for path in (args.out, args.plots, args.metrics):
                tracker.log_artifact(path, "search")

    return run_stage("search", stage)


if __name__ == "__main__":
    sys.exit(main())
