"""``fetch``: dispatch a source URI to its backend, through the cache, verifying the pin."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline.errors import ChecksumError, FetchError
from pipeline.fetch import http, package, registry, s3
from pipeline.fetch.cache import Cache
from pipeline.fetch.common import FetchedFile, redact_uri
from pipeline.io import sha256_file

log = logging.getLogger("pipeline.fetch")

SUPPORTED = ("https://host/path", "http://host/path", "s3://bucket/key",
             "models:/<name>/<version-or-alias>", package.FORM, "file:///abs/path", "a local path")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def _check_pin(sha256: str | None, source: str) -> str | None:
    if sha256 is None:
        return None
    pin = sha256.strip()
    if not _HEX64.fullmatch(pin):
        raise FetchError(f"{source}: the sha256 pin {sha256!r} is not 64 hex characters; "
                         "give the full hex digest (e.g. from `sha256sum`) or no pin.")
    return pin.lower()


def _scheme(source: str) -> str:
    try:
        scheme = urlsplit(source).scheme.lower()
    except ValueError as e:
        raise FetchError(
            f"{redact_uri(source)}: not a valid URI ({e}); check the source."
        ) from None
    if not scheme:
        return "file"
    if scheme not in ("https", "http", "s3", "file", "models", "pypi"):
        raise FetchError(f"{redact_uri(source)}: unsupported source scheme {scheme!r}; "
                         f"supported: {', '.join(SUPPORTED)}.")
    return scheme


def _local_path(source: str, redacted: str) -> Path:
    if urlsplit(source).scheme.lower() != "file":
        return Path(source).expanduser()
    parts = urlsplit(source)
    if parts.netloc not in ("", "localhost"):
        raise FetchError(f"{redacted}: file:// URIs must name a local absolute path, "
                         "like file:///data/teacher.pt.")
    return Path(unquote(parts.path))


def _fetch_local(source: str, redacted: str, pin: str | None) -> FetchedFile:
    """Local files are used in place: hashed and checked, never copied."""
    path = _local_path(source, redacted)
    if not path.exists():
        raise FetchError(f"{redacted}: no such file; check the path (relative paths are taken "
                         f"from {os.getcwd()}).")
    if not path.is_file():
        raise FetchError(f"{redacted}: not a regular file; give the checkpoint file itself.")
    try:
        digest, size = sha256_file(path), path.stat().st_size
    except OSError as e:
        raise FetchError(
            f"{redacted}: cannot read the file ({e.strerror}); check its permissions."
        ) from None
    if pin is not None and digest != pin:
        raise ChecksumError(f"{redacted}: sha256 mismatch: expected {pin}, got {digest} "
                            f"({size} bytes); this is not the pinned file: check the path, or "
                            "update the pin if the change is intended.")
    return FetchedFile(path.resolve(), digest, size, redacted, "file", from_cache=False)


def fetch(source: str, *, sha256: str | None = None, cache_dir: str | Path,
          timeout_s: float = 60.0, retries: int = 4, backoff_s: float = 1.0,
          progress: bool = True) -> FetchedFile:
    """Fetch ``source`` into ``cache_dir`` (local paths are used in place) and return the
    verified file. With ``sha256`` the bytes must match it (ChecksumError otherwise) and a
    cached blob with that digest is used without any transfer; without it, a source fetched
    before is served from the cache's sources index. Failures raise FetchError and leave
    nothing behind in the cache."""
    redacted = redact_uri(source)
    pin = _check_pin(sha256, redacted)
    scheme = _scheme(source)
    if scheme == "file":
        return _fetch_local(source, redacted, pin)

    cache = Cache(cache_dir)
    if pin is not None and (blob := cache.verified_blob(pin)) is not None:
        log.info("%s: pinned sha256 %s already cached", redacted, pin)
        return FetchedFile(blob, pin, blob.stat().st_size, redacted, scheme, from_cache=True)

    if scheme == "models":
        key, target = registry.resolve(source)
    elif scheme == "pypi":  # one member of one release on the index pip/uv are configured with
        key, target = package.cache_key(package.parse(source), package.configured_index()[0]), source
    else:
        key, target = source, source
    if pin is None and (hit := cache.lookup(key)) is not None:
        blob, digest, size = hit
        log.info("%s: cached as sha256 %s", redacted, digest)
        return FetchedFile(blob, digest, size, redacted, scheme, from_cache=True)

    opts = {"timeout_s": timeout_s, "retries": retries, "backoff_s": backoff_s,
            "progress": progress}
    with cache.workdir() as work:
        if scheme == "models":
            file, digest, size = registry.download(target, work, source=redacted)
        elif scheme == "pypi":
            file, digest, size = package.download(source, work, pin=pin, **opts)
        elif scheme == "s3":
            file, digest, size = s3.download(source, work, source=redacted, **opts)
        else:
            file, digest, size = http.download(source, work, source=redacted, **opts)
        blob = cache.commit(file, digest, size, pin=pin, key=key, source=redacted)
    log.info("%s: fetched %d bytes, sha256 %s", redacted, size, digest)
    return FetchedFile(blob, digest, size, redacted, scheme, from_cache=False)


def evict(fetched: FetchedFile, cache_dir: str | Path) -> None:
    """Drop a fetched file from the cache (a no-op for local files, which are not cached).

    For a download that turned out unusable, so a re-run fetches afresh instead of
    loading the same bad bytes from the cache.
    """
    if fetched.scheme != "file":
        Cache(cache_dir).evict(fetched.sha256)
