"""search: evolutionary search of student sub-networks under MAC or latency budgets
(pipeline/stages/search.py; latency models: pipeline/bench/latency.py, cached under
--cache-dir).

Reads the ``search`` and ``metric_networks`` sections of params.yaml,
``artifacts/student`` and ``artifacts/teacher``; writes ``artifacts/search/``
(configs.json: per budget the channels, output resolution, MACs, parameters and
distances, with the uniform-ratio baseline; pareto.png; pareto_latency_<runtime>.png
per runtime of a latency budget and latency.csv), ``metrics/search.json`` and
``plots/search/pareto.csv``.
"""

import sys

from ._cli import stage_main


def main(argv: list[str] | None = None) -> int:
    return stage_main("search", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
