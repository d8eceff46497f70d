"""Pieces shared by every fetch backend: the result type, retries, streaming (URI
redaction lives in pipeline/redaction.py and is re-exported here)."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from tqdm import tqdm

from pipeline.errors import FetchError, causes, os_reason
from pipeline.redaction import redact_uri, scrub

log = logging.getLogger("pipeline.fetch")

CHUNK = 1 << 20
T = TypeVar("T")
__all__ = ["FetchedFile", "Transient", "causes", "os_reason", "redact_uri", "scrub",
           "stream_to_file", "with_retries"]


@dataclass(frozen=True)
class FetchedFile:
    """A verified checkpoint file and where it came from."""

    path: Path  # in the cache for remote sources, the file itself for local paths
    sha256: str  # hex
    size: int  # bytes
    source: str  # redacted source URI (safe to log)
    scheme: str  # "https" | "http" | "s3" | "file" | "models" | "pypi"
    from_cache: bool  # True when no transfer happened because the cache already had it


class Transient(Exception):
    """A failure worth retrying; its message is already safe to show."""


def with_retries(attempt: Callable[[], T], *, source: str, retries: int, backoff_s: float) -> T:
    """Run ``attempt`` until it stops raising Transient, sleeping ``backoff_s * 2**n`` between
    tries; after ``retries`` retries raise FetchError with the last problem."""
    retries = max(0, retries)
    for n in range(retries + 1):
        try:
            return attempt()
        except Transient as e:
            problem = str(e)
            if n == retries:
                break
            delay = backoff_s * 2**n
            log.warning("%s: %s; retrying in %.2fs (attempt %d of %d)",
                        source, problem, delay, n + 2, retries + 1)
            time.sleep(delay)
    raise FetchError(
        f"{source}: {problem} (gave up after {retries + 1} attempts). "
        "Check that the host is reachable and serving the file, then run again."
    )


def stream_to_file(chunks: Iterable[bytes], dest: Path, *, total: int | None, desc: str,
                   progress: bool) -> tuple[str, int]:
    """Write ``chunks`` to ``dest`` (truncating it), hashing on the way; return (sha256, size)."""
    digest = hashlib.sha256()
    size = 0
    with open(dest, "wb") as f, tqdm(total=total, desc=desc, unit="B", unit_scale=True,
                                      unit_divisor=1024, file=sys.stderr, disable=not progress,
                                      leave=False) as bar:
        for chunk in chunks:
            f.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    return digest.hexdigest(), size


