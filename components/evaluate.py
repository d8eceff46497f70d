"""evaluate: teacher, full student and every searched configuration side by side
(pipeline/stages/evaluate.py): FID/KID/LPIPS, parameters, MACs, latency in PyTorch, ONNX
Runtime and ExecuTorch, and the 1024x1024 teacher/student latency ratio.

Reads the ``evaluate`` and ``metric_networks`` sections of params.yaml,
``artifacts/teacher``, ``artifacts/student`` and ``artifacts/search/configs.json``
(optional); writes ``metrics/evaluate.json``, ``plots/evaluate/*.csv`` and
``artifacts/evaluate/`` (report.md, grid.png, pareto.png).
"""

import sys

from ._cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("evaluate", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
