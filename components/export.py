"""export: mobile artifacts of the full student and every searched configuration
(pipeline/export/): ONNX, ExecuTorch (.pte, XNNPACK) and Core ML (.mlpackage), each
checked against PyTorch, with a model card per model.

Reads the ``export`` section of params.yaml, ``artifacts/student``, ``artifacts/teacher``
and, when they exist, ``artifacts/search/configs.json`` and ``metrics/evaluate.json``;
writes ``export/<model>/`` and ``metrics/export.json``, logs them to MLflow and registers
the full student's ONNX model in the MLflow Model Registry.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline import tracking
from pipeline.export.registry import register_onnx
from pipeline.export.stage import FULL, run_export
from pipeline.io import write_json
from pipeline.params import load_params

from ._cli import run_stage, stage_parser


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser("export", __doc__)
    parser.add_argument("--student", default="artifacts/student/student.safetensors")
    parser.add_argument("--teacher", default="artifacts/teacher/teacher.safetensors")
    parser.add_argument("--search", default="artifacts/search/configs.json",
                        help="searched configurations (absent: the full student only)")
    parser.add_argument("--evaluate", default="metrics/evaluate.json",
                        help="evaluate-stage figures for the cards (optional)")
    parser.add_argument("--out", default="export", help="output folder, one subfolder per model")
    args = parser.parse_args(argv)

    def stage() -> None:
        params = load_params(args.params)
        cfg = params.export
        with tracking.stage_run("export", cfg, tags={"profile": params.profile}) as tracker:
            metrics = run_export(cfg, args.student, args.teacher, args.search, args.evaluate,
                                 args.out, args.cache_dir)
            write_json(args.metrics, metrics)
            tracker.log_metrics(metrics)
            tracker.set_tags({"stand_in_lpips": str(bool(metrics["stand_in_lpips"])).lower()})
            tracker.log_artifact(args.out, "export")
            tracker.log_artifact(args.metrics, "export")
            if cfg.registry.enabled:
                version = register_onnx(Path(args.out) / FULL, cfg)
                if version is not None:
                    tracker.set_tags({"registered_model": f"{cfg.registry.name}/{version}"})

    return run_stage("export", stage)


if __name__ == "__main__":
    sys.exit(main())
