"""distill: train a MobileStyleGAN student on the fly from the teacher (pipeline/distillation.py).

Reads the ``distill`` section of params.yaml and ``artifacts/teacher``; writes
``artifacts/student/``, ``metrics/distill.json``, ``plots/distill/*.csv`` and
resumable snapshots in ``checkpoints/distill/``. Scale out with
``torchrun --nproc_per_node N -m components.distill`` (same arguments).
"""

from __future__ import annotations

import os
import sys

from pipeline import tracking
from pipeline.distillation import run_distill
from pipeline.io import write_json
from pipeline.params import load_params

from ._cli import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("distill", __doc__)
    parser.add_argument("--teacher", default="artifacts/teacher/teacher.safetensors")
    parser.add_argument("--out", default="artifacts/student", help="output folder")
    parser.add_argument("--snapshots", default="checkpoints/distill", help="resumable snapshots")
    parser.add_argument("--plots", default="plots/distill", help="loss/validation CSV folder")
    args = parser.parse_args(argv)
    main_rank = os.environ.get("RANK", "0") == "0"

    def stage() -> None:
        params = load_params(args.params)
        cfg = params.distill

        def run(tracker=None) -> None:
            _, metrics = run_distill(cfg, args.teacher, args.out, args.snapshots, args.plots,
                                     args.cache_dir, tracker, progress=not args.no_progress)
            if not main_rank:
                return
            write_json(args.metrics, metrics)
            if tracker:
                tracker.log_metrics(metrics)
                tracker.set_tags({"stand_in_weights": str(bool(
                    metrics["stand_in_lpips"] or metrics["stand_in_features"])).lower()})
                for path, where in ((args.out, "distill"), (args.plots, "distill/plots"),
                                    (args.metrics, "distill")):
                    tracker.log_artifact(path, where)

        if not main_rank:  # only rank 0 talks to MLflow
            return run()
        with tracking.stage_run("distill", cfg, tags={"profile": params.profile}) as tracker:
            run(tracker)

    return run_stage("distill", stage)


if __name__ == "__main__":
    sys.exit(main())
