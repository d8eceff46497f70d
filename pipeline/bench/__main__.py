"""``python -m pipeline.bench``: see :mod:`pipeline.bench.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
