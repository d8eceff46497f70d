"""HTTP(S) downloads with requests: streamed, hashed on the fly, retried on transient failures.

Credentials come from the environment, never from params: a user and password from
``~/.netrc`` (or the file ``$NETRC`` names; requests reads it for the URL's host), or a
bearer token from ``$STYLEGAN_MOBILE_HTTP_TOKEN``.
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import requests

from pipeline.errors import FetchError
from pipeline.fetch.common import CHUNK, Transient, causes, os_reason, scrub, stream_to_file, with_retries
from pipeline.redaction import HTTP_TOKEN_ENV

# Statuses that will not change by asking again: fail at once with a hint.
_PERMANENT_HINTS = {
    401: f"the server wants credentials: put a user and password for its host in ~/.netrc "
         f"(or the file $NETRC names), or a bearer token in ${HTTP_TOKEN_ENV}",
    403: f"access denied: check the credentials (~/.netrc, ${HTTP_TOKEN_ENV}) and that they "
         f"may read this file",
    404: "check the URL",
    410: "the file was removed from the server; find its new location",
}


class _Bearer(requests.auth.AuthBase):
    def __init__(self, token: str) -> None:
        self.token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token}"
        return request


def _transient_status(code: int) -> bool:
    return code in (408, 425, 429) or code >= 500


def _rejected_certificate(exc: BaseException) -> str | None:
    """Why the server's TLS certificate was not trusted, if that is what ``exc`` is about
    (other TLS failures, e.g. a handshake cut short, are not: they may pass)."""
    for e in causes(exc):
        if isinstance(e, ssl.SSLCertVerificationError):
            return (e.verify_message or "certificate not trusted").rstrip(".")
    return None


def download(url: str, workdir: Path, *, source: str, timeout_s: float, retries: int,
             backoff_s: float, progress: bool, name: str = "download",
             accept: str | None = None) -> tuple[Path, str, int]:
    """Download ``url`` to the file ``name`` in ``workdir``; return (file, sha256, size).

    ``source`` is the redacted URL, the only form that goes into messages; ``accept`` is sent
    as the Accept header (a package index serves JSON or HTML by it).
    """
    dest = workdir / name
    headers = {"Accept-Encoding": "identity", **({"Accept": accept} if accept else {})}
    desc = PurePosixPath(urlsplit(source).path).name or source

    def attempt() -> tuple[str, int]:
        try:
            # identity encoding: the bytes on the wire are the file, so Content-Length counts them
            with session.get(url, stream=True, timeout=(timeout_s, timeout_s),
                             headers=headers) as resp:
                status = f"HTTP {resp.status_code} {resp.reason or ''}".rstrip()
                if _transient_status(resp.status_code):
                    raise Transient(status)
                if resp.status_code >= 300:
                    hint = _PERMANENT_HINTS.get(resp.status_code, "check the URL")
                    raise FetchError(f"{source}: {status}; {hint}.")
                length = resp.headers.get("Content-Length", "")
                total = int(length) if length.isdigit() else None
                digest, size = stream_to_file(resp.iter_content(CHUNK), dest, total=total,
                                              desc=desc, progress=progress)
                received = resp.raw.tell()  # bytes off the wire, before any decoding
        except requests.exceptions.Timeout:
            raise Transient(f"timed out after {timeout_s:g}s") from None
        except requests.exceptions.ChunkedEncodingError:
            raise Transient("connection closed before the whole body arrived") from None
        except requests.exceptions.ConnectionError as e:  # SSLError is one
            if (problem := _rejected_certificate(e)) is not None:
                # Every try gets the same certificate: fail at once, saying how to trust it.
                raise FetchError(
                    f"{source}: TLS certificate verification failed ({scrub(problem, url)}); "
                    "if the server uses a private CA, point REQUESTS_CA_BUNDLE at a CA bundle "
                    "that holds it, then run again."
                ) from None
            reason = scrub(os_reason(e) or "unknown reason", url)
            raise Transient(f"connection failed ({reason})") from None
        except requests.exceptions.RequestException as e:  # invalid URL, redirect loop, ...
            raise FetchError(
                f"{source}: request failed ({type(e).__name__}); check the URL."
            ) from None
        # urllib3 2 already raises on a short body (caught above); urllib3 1.x does not.
        if total is not None and received != total:
            raise Transient(f"truncated body: got {received} of {total} bytes")
        return digest, size

    with requests.Session() as session:
        if token := os.environ.get(HTTP_TOKEN_ENV):
            session.auth = _Bearer(token)  # not re-sent when a redirect leaves the host
        digest, size = with_retries(attempt, source=source, retries=retries, backoff_s=backoff_s)
    return dest, digest, size
