"""Local paths, pin validation, unknown schemes, and cache repair (remote side: the HTTP server)."""

from __future__ import annotations

import hashlib
import os

import pytest

from pipeline.errors import ChecksumError, FetchError
from pipeline.fetch import fetch

from .conftest import PAYLOAD, PAYLOAD_SHA

FAST = {"retries": 1, "backoff_s": 0.001, "timeout_s": 5.0, "progress": False}


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "teacher dir" / "teacher.pt"
    path.parent.mkdir()
    path.write_bytes(PAYLOAD)
    return path


def test_plain_path_is_used_in_place(ckpt, cache_dir, cache_files):
    got = fetch(str(ckpt), sha256=PAYLOAD_SHA, cache_dir=cache_dir)
    assert got.path == ckpt.resolve() and got.scheme == "file" and not got.from_cache
    assert (got.sha256, got.size, got.source) == (PAYLOAD_SHA, len(PAYLOAD), str(ckpt))
    assert cache_files() == []  # never copied


def test_relative_path(ckpt, cache_dir, monkeypatch):
    monkeypatch.chdir(ckpt.parent.parent)
    assert fetch("teacher dir/teacher.pt", cache_dir=cache_dir).path == ckpt.resolve()


def test_file_uri(ckpt, cache_dir):
    got = fetch(ckpt.as_uri(), cache_dir=cache_dir)  # as_uri percent-encodes the space
    assert got.path == ckpt.resolve() and got.sha256 == PAYLOAD_SHA and got.scheme == "file"


def test_missing_path(tmp_path, cache_dir):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FetchError, match=f"{missing}: no such file"):
        fetch(str(missing), cache_dir=cache_dir)
    with pytest.raises(FetchError, match="no such file"):
        fetch(missing.as_uri(), cache_dir=cache_dir)


def test_directory_is_rejected(tmp_path, cache_dir):
    with pytest.raises(FetchError, match="not a regular file"):
        fetch(str(tmp_path), cache_dir=cache_dir)


def test_local_pin_mismatch(ckpt, cache_dir):
    wrong = hashlib.sha256(b"x").hexdigest()
    with pytest.raises(ChecksumError, match=f"expected {wrong}, got {PAYLOAD_SHA}"):
        fetch(str(ckpt), sha256=wrong, cache_dir=cache_dir)
    assert ckpt.read_bytes() == PAYLOAD  # untouched


@pytest.mark.parametrize("pin", ["abc", "g" * 64, PAYLOAD_SHA + "0", ""])
def test_malformed_pin(ckpt, cache_dir, pin):
    with pytest.raises(FetchError, match="not 64 hex characters"):
        fetch(str(ckpt), sha256=pin, cache_dir=cache_dir)


def test_pin_is_case_insensitive(ckpt, cache_dir):
    assert fetch(str(ckpt), sha256=PAYLOAD_SHA.upper(), cache_dir=cache_dir).sha256 == PAYLOAD_SHA


@pytest.mark.parametrize("source", ["ftp://user:pw@host/teacher.pt?token=s3cret", "gs://b/k",
                                    "hf://org/model"])
def test_unknown_scheme(source, cache_dir):
    with pytest.raises(FetchError) as err:
        fetch(source, cache_dir=cache_dir)
    message = str(err.value)
    assert "unsupported source scheme" in message
    assert all(s in message for s in ("https://", "s3://", "models:/", "local path"))
    assert "pw" not in message and "s3cret" not in message


def _corrupt(path):
    os.chmod(path, 0o644)
    path.write_bytes(b"bit rot")


def test_corrupt_pinned_blob_is_replaced(http_server, cache_dir):
    url = http_server.url("/files/teacher.pt")
    blob = fetch(url, sha256=PAYLOAD_SHA, cache_dir=cache_dir, **FAST).path
    _corrupt(blob)
    again = fetch(url, sha256=PAYLOAD_SHA, cache_dir=cache_dir, **FAST)
    assert not again.from_cache and again.path.read_bytes() == PAYLOAD
    assert http_server.hits["/files/teacher.pt"] == 2


def test_corrupt_indexed_blob_is_replaced(http_server, cache_dir):
    url = http_server.url("/files/teacher.pt")
    _corrupt(fetch(url, cache_dir=cache_dir, **FAST).path)
    again = fetch(url, cache_dir=cache_dir, **FAST)
    assert not again.from_cache and again.sha256 == PAYLOAD_SHA
    assert again.path.read_bytes() == PAYLOAD
    assert http_server.hits["/files/teacher.pt"] == 2


def test_failed_refetch_removes_the_stale_index_entry(http_server, cache_dir, cache_files):
    url = http_server.url("/files/teacher.pt")
    blob = fetch(url, cache_dir=cache_dir, **FAST).path
    blob.unlink()
    del http_server.files["teacher.pt"]
    with pytest.raises(FetchError, match="HTTP 404"):
        fetch(url, cache_dir=cache_dir, **FAST)
    assert cache_files() == []


def test_failure_keeps_earlier_blobs(http_server, cache_dir, cache_files):
    fetch(http_server.url("/files/other.pt"), cache_dir=cache_dir, **FAST)
    before = cache_files()
    with pytest.raises(ChecksumError):
        fetch(http_server.url("/files/teacher.pt"), sha256="0" * 64, cache_dir=cache_dir, **FAST)
    assert cache_files() == before


def test_blobs_are_read_only(http_server, cache_dir):
    blob = fetch(http_server.url("/files/teacher.pt"), cache_dir=cache_dir, **FAST).path
    assert not os.stat(blob).st_mode & 0o222


def test_evict_removes_the_blob_and_every_index_entry_pointing_at_it(tmp_path):
    from pipeline.fetch.cache import Cache
    from pipeline.io import write_json

    cache = Cache(tmp_path / "cache")
    digest, other = "a" * 64, "b" * 64
    for d in (digest, other):
        cache.blobs.mkdir(parents=True, exist_ok=True)
        cache.blob_path(d).write_bytes(d.encode())
    write_json(cache.sources / "one.json", {"source": "s1", "sha256": digest, "size": 64})
    write_json(cache.sources / "two.json", {"source": "s2", "sha256": digest, "size": 64})
    write_json(cache.sources / "keep.json", {"source": "s3", "sha256": other, "size": 64})
    cache.evict(digest)
    assert not cache.blob_path(digest).exists() and cache.blob_path(other).exists()
    assert sorted(p.name for p in cache.sources.iterdir()) == ["keep.json"]
