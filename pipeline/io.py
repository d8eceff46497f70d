"""Atomic file output and hashing.

Stages write through these helpers so that a crash or a failed check never leaves
a half-written file or folder where a finished one is expected: everything is
written beside its destination under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import DiskFullError
from .scratch import owner, sweep

_CHUNK = 1 << 20
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def reporting_full_disk(dest: str | os.PathLike) -> Iterator[None]:
    """Turn "no space left on device" (or over quota) while writing ``dest`` into one
    line that names it, instead of a traceback from deep inside a writer."""
    try:
        yield
    except Exception as e:
        if out_of_space(e) is None:
            raise
        raise DiskFullError(no_space_message(dest)) from None


def out_of_space(exc: BaseException | None) -> OSError | None:
    """The ENOSPC/EDQUOT error ``exc`` is or was raised from, if any (torch's writer, for
    one, fails again in its clean-up and raises a RuntimeError from the real cause)."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def no_space_message(dest: str | os.PathLike) -> str:
    existing = next((p for p in (Path(dest), *Path(dest).parents) if p.exists()), Path("."))
    free = shutil.disk_usage(existing).free / 2**20
    return (f"{dest}: no space left on device ({free:.0f} MiB free there); free some space "
            "or write elsewhere, then run again (nothing was half-written)")


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it to ``dest`` on success.

    On an exception the temporary file is removed and ``dest`` is untouched; a full disk
    is reported as :class:`DiskFullError` naming ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest.parent, prefix=f".{dest.name}.")  # what a killed run left
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.{owner()}.", suffix=".tmp", dir=dest.parent)
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would make outputs private
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        with reporting_full_disk(dest):
            yield tmp_path
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; swap it into place on success.

    An existing ``dest`` is replaced only after the new folder is complete.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep(dest.parent, prefix=f".{dest.name}.")  # what a killed run left
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.{owner()}.", suffix=".tmp", dir=dest.parent))
    tmp.chmod(0o777 & ~_umask())  # mkdtemp's 0700 would make outputs private
    try:
        with reporting_full_disk(dest):
            yield tmp
        if dest.exists():
            old = dest.with_name(f".{dest.name}.{owner()}.old.tmp")
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write ``data`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
