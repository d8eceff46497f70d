"""fetch_teacher: download/verify/normalise the teacher (see pipeline/teacher.py).

Reads the ``fetch_teacher`` section of params.yaml; writes ``artifacts/teacher/``
and ``metrics/fetch_teacher.json``; logs everything to MLflow.
"""

from __future__ import annotations

import sys

from pipeline import tracking
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.teacher import METADATA_FILE, SAMPLES_FILE, fetch_teacher

from ._cli import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("fetch_teacher", __doc__)
    parser.add_argument("--out", default="artifacts/teacher", help="output folder")
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)  # validated before any download or model work
        cfg = params.fetch_teacher
        tags = {"profile": params.profile, "teacher.random_weights": str(cfg.is_random).lower()}
        with tracking.stage_run("fetch_teacher", cfg, tags=tags) as run:
            result = fetch_teacher(cfg, args.out, args.cache_dir, progress=not args.no_progress)
            write_json(args.metrics, result.metrics)
            meta = result.metadata
            run.set_tags({
                "teacher.source": meta["source"], "teacher.format": meta["format"],
                "teacher.sha256": meta.get("source_sha256") or "none",
                "teacher.resolution": meta["architecture"]["resolution"],
                "stand_in_weights": str(meta["random_weights"]).lower(),
            })
            run.log_metrics(result.metrics)
            run.log_artifact(f"{args.out}/{METADATA_FILE}", "teacher")
            run.log_artifact(f"{args.out}/{SAMPLES_FILE}", "teacher")
            run.log_artifact(args.metrics)

    return run_stage("fetch_teacher", stage)


if __name__ == "__main__":
    sys.exit(main())
