"""What every stage CLI shares: the standard arguments, the stage's own paths as
options, turning input errors into exit 2, and keeping secrets out of what it prints."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import traceback

from pipeline.errors import PipelineError
from pipeline.io import no_space_message, out_of_space
from pipeline.redaction import ScrubbingFilter, scrub_secrets

CACHE_ENV = "STYLEGAN_MOBILE_CACHE"


def stage_main(name: str, doc: str | None, argv: list[str] | None = None) -> int:
    """``python -m components.<name>``: parse, validate params, run the stage (exit 0), or
    print one line naming the problem (exit 2)."""
    from pipeline import stages
    from pipeline.params import load_params

    stage = stages.load(name)
    parser = argparse.ArgumentParser(prog=f"python -m components.{name}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml", help="params file (default: %(default)s)")
    parser.add_argument("--metrics", default=f"metrics/{name}.json", help="metrics JSON output")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--cache-dir", default=os.environ.get(CACHE_ENV, ".cache/teachers"),
        help=f"download cache for checkpoints and weights (default: ${CACHE_ENV} or %(default)s)")
    for f in dataclasses.fields(stage.Paths):
        parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=f.default,
                            help=f"{f.metadata.get('help', '')} (default: %(default)s)")
    args = parser.parse_args(argv)
    paths = stage.Paths(**{f.name: getattr(args, f.name) for f in dataclasses.fields(stage.Paths)})
    logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(ScrubbingFilter())
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        params = load_params(args.params)  # validated before any download or model work
        stages.execute(stage, params, paths, args.metrics, args.cache_dir,
                       progress=not args.no_progress)
    except PipelineError as e:
        print(scrub_secrets(f"{name}: error: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: outputs were left as they were
        print(f"{name}: {e or 'interrupted'}", file=sys.stderr)
        return 130
    except Exception as e:
        if (full := out_of_space(e)) is not None:  # outside the atomic writers, which name their file
            print(f"{name}: error: {no_space_message(full.filename or os.getcwd())}",
                  file=sys.stderr)
            return 2
        # A bug: the whole traceback, but a library may have quoted a credential in it.
        print(scrub_secrets("".join(traceback.format_exception(e))), file=sys.stderr, end="")
        return 1
    return 0


def _interrupt(signum: int, frame) -> None:
    """SIGTERM (a scheduler stopping the task, ``kill``) unwinds like Ctrl-C, so temporary
    files are removed and the MLflow run is closed as KILLED."""
    raise KeyboardInterrupt(f"terminated by signal {signal.Signals(signum).name}")
