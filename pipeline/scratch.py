"""Where a stage's temporary files go, and how those of a killed run are swept.

Every temporary name carries the host and pid of the process that made it:
``.<name>.<host>-<pid>.<random>.tmp`` beside an output (an atomic write renames within
one filesystem), ``fetch.<host>-<pid>.<random>.tmp`` in the download cache, and
``.tmp/<stage>/<host>-<pid>.<random>.tmp/`` for what a stage, or a library it calls,
writes through :mod:`tempfile` (coremltools' packages, the benchmark's exported files).
All are git-ignored. A run killed with -9 cannot remove its own; the next run that
writes there removes every such entry of this host whose process is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

SCRATCH = Path(".tmp")
log = logging.getLogger(__name__)
_OWNER = re.compile(r"(?:^|\.)(?P<host>[A-Za-z0-9-]+)-(?P<pid>\d+)\.[a-z0-9_]+\.tmp$")


def owner() -> str:
    """``<host>-<pid>`` of this process, as temporary names carry it."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    return f"{host}-{os.getpid()}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


_swept: set[tuple[Path, str]] = set()  # (folder, prefix) already swept by this process


def sweep(folder: Path, prefix: str = "") -> list[Path]:
    """Remove the temporaries in ``folder`` (names starting with ``prefix``) that a process
    of this host left when it was killed; those of live processes and other hosts stay.
    Once per folder and prefix in a process: what a killed run left was there before."""
    key = (Path(folder).resolve(), prefix)
    if key in _swept:
        return []
    _swept.add(key)
    host = owner().rsplit("-", 1)[0]
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in folder.iterdir():
            found = _OWNER.search(entry.name)
            if (not entry.name.startswith(prefix) or found is None or found["host"] != host
                    or alive(int(found["pid"]))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    if removed:
        log.info("removed %d temporary file(s) left by killed runs: %s", len(removed),
                 ", ".join(str(p) for p in removed[:5]))
    return removed


@contextlib.contextmanager
def stage_scratch(stage: str) -> Iterator[Path]:
    """A private temporary folder for this run of ``stage``, which every :mod:`tempfile`
    user in the process (and its subprocesses, through ``TMPDIR``) writes into; removed at
    the end, whatever happens, with the folders above it once they are empty."""
    base = SCRATCH / stage
    sweep(base)
    base.mkdir(parents=True, exist_ok=True)
    mine = Path(tempfile.mkdtemp(prefix=f"{owner()}.", suffix=".tmp", dir=base)).resolve()
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir, os.environ["TMPDIR"] = str(mine), str(mine)
    try:
        yield mine
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        shutil.rmtree(mine, ignore_errors=True)
        for empty in (base, SCRATCH):
            with contextlib.suppress(OSError):
                empty.rmdir()
