"""fetch_teacher: download, verify and normalise the teacher (pipeline/stages/fetch_teacher.py).

Reads the ``fetch_teacher`` section of params.yaml; writes ``artifacts/teacher/``
(teacher.safetensors, metadata.json, samples.png) and ``metrics/fetch_teacher.json``.
"""

import sys

from ._cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("fetch_teacher", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
