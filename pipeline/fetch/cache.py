"""Content-addressed download cache.

Layout under ``cache_dir``::

    blobs/sha256/<hex>          verified files, named by their digest (read-only)
    sources/<sha256(key)>.json  {"source", "sha256", "size"}: which blob a source gave last time
    tmp/fetch.<host>-<pid>.*/   downloads in progress (same filesystem, so moving into blobs/
                                is an atomic rename); removed whatever happens, and those of
                                killed runs by the next download

A blob is written before its index entry, so a crash can at worst leave a valid blob
that nothing points to, never an index entry pointing at a partial file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import ChecksumError
from pipeline.io import reporting_full_disk, sha256_file, write_json
from pipeline.scratch import owner, sweep


class Cache:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.sources = self.root / "sources"
        self.tmp = self.root / "tmp"

    def blob_path(self, digest: str) -> Path:
        return self.blobs / digest

    def verified_blob(self, digest: str) -> Path | None:
        """The blob for ``digest`` if present and intact; a corrupt one is deleted."""
        path = self.blob_path(digest)
        if not path.is_file():
            return None
        if sha256_file(path) == digest:
            return path
        path.unlink(missing_ok=True)
        return None

    def _index_path(self, key: str) -> Path:
        return self.sources / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def lookup(self, key: str) -> tuple[Path, str, int] | None:
        """(blob, sha256, size) that ``key`` fetched last time, if that blob is still intact.

        A stale entry (blob gone or corrupt, unreadable JSON) is removed.
        """
        index = self._index_path(key)
        try:
            entry = json.loads(index.read_text())
            digest, size = str(entry["sha256"]), int(entry["size"])
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            index.unlink(missing_ok=True)
            return None
        blob = self.verified_blob(digest)
        if blob is None:
            index.unlink(missing_ok=True)
            return None
        return blob, digest, size

    def evict(self, digest: str) -> None:
        """Remove a blob and every index entry pointing at it (e.g. it is not a checkpoint)."""
        if self.sources.is_dir():
            for index in self.sources.glob("*.json"):
                try:
                    if json.loads(index.read_text()).get("sha256") == digest:
                        index.unlink(missing_ok=True)
                except (ValueError, OSError, AttributeError):
                    index.unlink(missing_ok=True)
        self.blob_path(digest).unlink(missing_ok=True)

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A scratch folder inside the cache for one download; always removed afterwards.
        A download that fills the disk is reported naming the cache."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        sweep(self.tmp)  # downloads of killed runs
        path = Path(tempfile.mkdtemp(prefix=f"fetch.{owner()}.", suffix=".tmp", dir=self.tmp))
        try:
            with reporting_full_disk(self.root):
                yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, file: Path, digest: str, size: int, *, pin: str | None, key: str,
               source: str) -> Path:
        """Verify ``file`` against ``pin``, move it into blobs/ and record ``key`` -> blob."""
        if pin is not None and digest != pin:
            raise ChecksumError(
                f"{source}: sha256 mismatch: expected {pin}, got {digest} ({size} bytes). "
                "The source does not hold the pinned file; check the source URI, or update "
                "the sha256 pin if the change is intended. Nothing was cached."
            )
        dest = self.blob_path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(file, 0o444)  # blobs are immutable; guard against in-place edits
        os.replace(file, dest)
        write_json(self._index_path(key), {"source": source, "sha256": digest, "size": size})
        return dest
