"""HTTP(S) fetches against a real ThreadingHTTPServer on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import logging
import time

import pytest

from pipeline.errors import ChecksumError, DiskFullError, FetchError
from pipeline.fetch import fetch, redact_uri
from tests.conftest import full_disk_open

from .conftest import PAYLOAD, PAYLOAD_SHA

FAST = {"retries": 3, "backoff_s": 0.001, "timeout_s": 5.0, "progress": False}


def test_download_then_cache_hit_makes_no_request(http_server, cache_dir, cache_files):
    url = http_server.url("/files/teacher.pt")
    first = fetch(url, cache_dir=cache_dir, **FAST)
    assert (first.scheme, first.from_cache, first.source) == ("http", False, url)
    assert first.sha256 == PAYLOAD_SHA and first.size == len(PAYLOAD)
    assert first.path == cache_dir / "blobs" / "sha256" / PAYLOAD_SHA
    assert first.path.read_bytes() == PAYLOAD
    index = f"sources/{hashlib.sha256(url.encode()).hexdigest()}.json"
    assert cache_files() == [f"blobs/sha256/{PAYLOAD_SHA}", index]

    second = fetch(url, cache_dir=cache_dir, **FAST)
    assert second.from_cache and second.path == first.path and second.sha256 == PAYLOAD_SHA
    assert http_server.hits["/files/teacher.pt"] == 1


def test_progress_bar_goes_to_stderr(http_server, cache_dir, capsys):
    fetch(http_server.url("/files/teacher.pt"), cache_dir=cache_dir, **{**FAST, "progress": True})
    out, err = capsys.readouterr()
    assert out == "" and "teacher.pt" in err


@pytest.mark.parametrize("path, expected", [
    ("/files/missing.pt", "HTTP 404 Not Found"),
    ("/forbidden", "HTTP 403 Forbidden"),
])
def test_client_errors_fail_at_once(http_server, cache_dir, cache_files, path, expected):
    url = http_server.url(path)
    with pytest.raises(FetchError) as err:
        fetch(url, cache_dir=cache_dir, **FAST)
    assert str(err.value).startswith(f"{url}: {expected}")
    assert http_server.hits[path] == 1  # no retries on 4xx
    assert cache_files() == []


@pytest.mark.parametrize("code", [503, 429])
def test_transient_status_is_retried(http_server, cache_dir, caplog, code):
    path = f"/flaky/{code}/2/teacher.pt"
    with caplog.at_level(logging.WARNING, logger="pipeline.fetch"):
        got = fetch(http_server.url(path), sha256=PAYLOAD_SHA, cache_dir=cache_dir, **FAST)
    assert got.sha256 == PAYLOAD_SHA and not got.from_cache
    assert http_server.hits[path] == 3
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 2


def test_transient_status_gives_up_after_retries(http_server, cache_dir, cache_files):
    path = "/flaky/503/10/teacher.pt"
    with pytest.raises(FetchError, match=r"HTTP 503 Service Unavailable .*gave up after 4"):
        fetch(http_server.url(path), cache_dir=cache_dir, **FAST)
    assert http_server.hits[path] == 4
    assert cache_files() == []


def test_truncated_body_is_retried_then_fails(http_server, cache_dir, cache_files):
    with pytest.raises(FetchError, match="before the whole body arrived.*gave up after 4 attempts"):
        fetch(http_server.url("/truncated"), cache_dir=cache_dir, **FAST)
    assert http_server.hits["/truncated"] == 4
    assert cache_files() == []


def test_unreachable_host_fails_after_retries(closed_port, cache_dir, cache_files, caplog):
    url = f"http://127.0.0.1:{closed_port}/teacher.pt"
    refused = r"connection failed \(.*refused.*\).*gave up after 4"
    with caplog.at_level(logging.WARNING, logger="pipeline.fetch"), \
            pytest.raises(FetchError, match=refused):
        fetch(url, cache_dir=cache_dir, **FAST)
    assert sum("retrying" in r.getMessage() for r in caplog.records) == 3
    assert cache_files() == []


def test_wrong_pin_leaves_nothing_behind(http_server, cache_dir, cache_files):
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumError) as err:
        fetch(http_server.url("/files/teacher.pt"), sha256=wrong, cache_dir=cache_dir, **FAST)
    assert wrong in str(err.value) and PAYLOAD_SHA in str(err.value)
    assert cache_files() == []  # no blob, no index entry, no temp file


def test_pin_hit_avoids_the_transfer(http_server, cache_dir):
    fetch(http_server.url("/files/teacher.pt"), cache_dir=cache_dir, **FAST)
    # Another URL (which would even 404) is not contacted: the pinned bytes are cached.
    got = fetch(http_server.url("/files/gone.pt"), sha256=PAYLOAD_SHA.upper(),
                cache_dir=cache_dir, **FAST)
    assert got.from_cache and got.sha256 == PAYLOAD_SHA and got.path.read_bytes() == PAYLOAD
    assert http_server.hits["/files/gone.pt"] == 0


def test_credentials_and_query_never_leak(http_server, cache_dir, closed_port, caplog):
    port = http_server.base.rsplit(":", 1)[1]
    secret_url = f"http://user:hunter2@127.0.0.1:{port}/files/teacher.pt?sig=abc123secret"
    got = fetch(secret_url, cache_dir=cache_dir, **FAST)
    assert got.source == f"http://127.0.0.1:{port}/files/teacher.pt"
    assert http_server.auth[-1] and http_server.auth[-1].startswith("Basic ")  # creds were used

    failing = [secret_url.replace("teacher.pt", "nope.pt"),
               f"http://user:hunter2@127.0.0.1:{closed_port}/x.pt?sig=abc123secret",
               secret_url.replace("/files/teacher.pt", "/truncated")]
    with caplog.at_level(logging.DEBUG, logger="pipeline.fetch"):
        for url in failing:
            with pytest.raises(FetchError) as err:
                fetch(url, cache_dir=cache_dir, **FAST)
            for text in (str(err.value), repr(err.value)):
                assert "hunter2" not in text and "abc123secret" not in text and "user:" not in text
    assert caplog.records and all("hunter2" not in r.getMessage() and "abc123secret" not in
                                  r.getMessage() for r in caplog.records)


def test_redact_uri():
    assert (redact_uri("https://user:pass@127.0.0.1:8443/x.pt?sig=abc#frag")
            == "https://127.0.0.1:8443/x.pt")
    assert redact_uri("s3://bucket/dir/key.pt") == "s3://bucket/dir/key.pt"
    assert redact_uri("models:/teacher/3") == "models:/teacher/3"
    assert redact_uri("/data/teacher.pt") == "/data/teacher.pt"
    assert redact_uri("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"
    assert redact_uri("http://u:p@[bad/x.pt?sig=1") == "http://[bad/x.pt"


def test_a_download_that_fills_the_cache_disk_names_the_cache(http_server, tmp_path,
                                                              monkeypatch):
    import pipeline.fetch.common as common

    http_server.files["teacher.pt"] = b"x" * 4096
    monkeypatch.setattr(common, "open", full_disk_open, raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(DiskFullError) as failed:
        fetch(http_server.url("/files/teacher.pt"), cache_dir=cache, retries=3, backoff_s=0.001,
              timeout_s=5.0, progress=False)
    assert str(failed.value).startswith(f"{cache}: no space left on device")
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # no partial download, no blob


def test_credentials_come_from_netrc_for_the_hosts_it_names(http_server, cache_dir, tmp_path,
                                                            monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login reader password hunter2\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    fetch(http_server.url("/files/teacher.pt"), cache_dir=cache_dir, **FAST)
    assert http_server.auth[-1] == "Basic " + base64.b64encode(b"reader:hunter2").decode()


def test_a_bearer_token_comes_from_the_environment(http_server, cache_dir, monkeypatch):
    monkeypatch.setenv("STYLEGAN_MOBILE_HTTP_TOKEN", "tok-hunter2")
    fetch(http_server.url("/files/teacher.pt"), cache_dir=cache_dir, **FAST)
    assert http_server.auth[-1] == "Bearer tok-hunter2"


def test_a_401_says_where_credentials_go_and_never_the_url(http_server, cache_dir):
    with pytest.raises(FetchError) as refused:
        fetch(http_server.url("/private/teacher.pt"), cache_dir=cache_dir, **FAST)
    message = str(refused.value)
    assert "HTTP 401" in message and "~/.netrc" in message and "STYLEGAN_MOBILE_HTTP_TOKEN" in message
    assert "in the URL" not in message and "user:password@" not in message


def test_untrusted_certificate_fails_at_once_with_a_ca_bundle_hint(https_server, cache_dir, cache_files,
                                                                   monkeypatch):
    for var in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # requests trusts either
        monkeypatch.delenv(var, raising=False)
    url = https_server.url("/files/teacher.pt")
    start = time.monotonic()
    with pytest.raises(FetchError) as err:
        fetch(url, cache_dir=cache_dir, **{**FAST, "backoff_s": 5.0})  # a retry would sleep 5 s
    assert time.monotonic() - start < 4
    message = str(err.value)
    assert message.startswith(f"{url}: TLS certificate verification failed (self")  # self-signed
    assert "REQUESTS_CA_BUNDLE" in message and "\n" not in message
    assert https_server.connections == 1 and not https_server.hits  # one try, no request sent
    assert cache_files() == []


def test_ca_bundle_from_the_environment_is_trusted(https_server, self_signed_cert, cache_dir, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(self_signed_cert[0]))  # as the README says
    got = fetch(https_server.url("/files/teacher.pt"), sha256=PAYLOAD_SHA, cache_dir=cache_dir, **FAST)
    assert (got.scheme, got.sha256) == ("https", PAYLOAD_SHA)
