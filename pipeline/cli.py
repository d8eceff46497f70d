"""What the library's own command lines share (``python -m pipeline.bench``,
``python -m pipeline.training.reference``): bad input is one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage block) and exits 2."""

    def error(self, message: str) -> None:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def positive(kind: type = int) -> Callable[[str], float]:
    """An argparse ``type``: a number of ``kind`` above 0, or a message naming the text."""
    name = "integer" if kind is int else "number"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {name}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected a positive {name}, got {text!r}")
        return value

    return parse
