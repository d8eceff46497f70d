"""export: mobile artifacts of the full student and every searched configuration
(pipeline/stages/export.py): ONNX, ExecuTorch (.pte, XNNPACK) and Core ML (.mlpackage),
each checked against PyTorch, with a model card per model.

Reads the ``export`` and ``metric_networks`` sections of params.yaml,
``artifacts/student``, ``artifacts/teacher`` and, when they exist,
``artifacts/search/configs.json`` and ``metrics/evaluate.json``; writes
``export/<model>/`` and ``metrics/export.json``, and registers the full student's ONNX
model in the MLflow Model Registry.
"""

import sys

from ._cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("export", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
