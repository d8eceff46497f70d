"""What every stage CLI shares: the standard arguments and turning input errors into exit 2."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from pipeline.errors import PipelineError

CACHE_ENV = "STYLEGAN_MOBILE_CACHE"


def stage_parser(stage: str, doc: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m components.{stage}", description=doc)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--metrics", default=f"metrics/{stage}.json", help="metrics JSON output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--cache-dir", default=os.environ.get(CACHE_ENV, ".cache/teachers"),
        help=f"download cache for checkpoints and weights (default: ${CACHE_ENV} or %(default)s)",
    )
    return parser


def run_stage(stage: str, main: Callable[[], None]) -> int:
    """Run ``main``; bad input (a PipelineError) prints one clear line and exits 2."""
    logging.basicConfig(level=logging.INFO, format=f"[{stage}] %(message)s")
    try:
        main()
    except PipelineError as e:
        print(f"{stage}: error: {e}", file=sys.stderr)
        return 2
    return 0
