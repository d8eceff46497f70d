"""distill: train a MobileStyleGAN student on the fly from the teacher
(pipeline/stages/distill.py).

Reads the ``distill`` and ``metric_networks`` sections of params.yaml and
``artifacts/teacher``; writes ``artifacts/student/``, ``metrics/distill.json``,
``plots/distill/*.csv`` and resumable snapshots in ``checkpoints/distill/``. Scale out
with ``torchrun --nproc_per_node N -m components.distill`` (same arguments).
"""

import sys

from ._cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("distill", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
