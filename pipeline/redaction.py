"""Keeping secrets out of every message, log line and traceback a stage prints.

Credentials reach the pipeline only through the environment (AWS and MLflow variables,
``$STYLEGAN_MOBILE_HTTP_TOKEN``, ``~/.netrc``); params refuse them (pipeline/params.py),
so nothing DVC or MLflow records can hold one. What is left is text: a library may quote
the URL it was given (with its user:password@) or an environment value in an exception;
:func:`scrub_secrets` blanks both, and the stage CLIs pass every error and log line
through it.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import unquote, urlsplit

HTTP_TOKEN_ENV = "STYLEGAN_MOBILE_HTTP_TOKEN"
# Variables whose whole value is a secret, and URIs that may carry one (user:password@, a query).
SECRET_ENV = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", HTTP_TOKEN_ENV)
URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AWS_ENDPOINT_URL",
           "MLFLOW_S3_ENDPOINT_URL")
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][\w+.-]*://)[^/\s@]+@")
# Query parameters that carry credentials: tokens, API keys, presigned-URL signatures.
_SECRET_QUERY = re.compile(r"token|key|sig|secret|pass|pwd|auth|credential|session|^x-amz-|^x-goog-",
                           re.IGNORECASE)


def redact_uri(uri: str) -> str:
    """Remove userinfo (user:password@) and the whole query string/fragment (presigned
    S3 URLs carry signatures there) so the result is safe to print and log. A
    ``pypi:name==version#path`` source is kept whole: its fragment is the file it names,
    and it has no place for a secret (the index's URL comes from the environment)."""
    if uri.startswith("pypi:") and "@" not in uri and "://" not in uri:
        return uri
    try:
        parts = urlsplit(uri)
    except ValueError:  # malformed (e.g. a bad IPv6 host): cut the same pieces by hand
        head, sep, rest = uri.partition("://")
        rest = re.split(r"[?#]", rest, maxsplit=1)[0]
        host, slash, path = rest.partition("/")
        return f"{head}{sep}{host.rpartition('@')[2]}{slash}{path}"
    if not parts.scheme:  # a plain local path: nothing secret in it
        return uri
    # Rebuilt by hand: urlunsplit would turn sqlite:////abs/path into sqlite://abs/path.
    if uri[len(parts.scheme) + 1:].startswith("//"):
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"
    return f"{parts.scheme}:{parts.path}"


def scrub(text: str, uri: str) -> str:
    """Blank out the secret parts of ``uri`` wherever they appear in ``text``.

    Used on messages of third-party exceptions, which may quote the URL they were given.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return text
    userinfo = parts.netloc.rpartition("@")[0]
    secrets = {s for s in (userinfo, parts.password, parts.query, parts.fragment) if s}
    secrets |= {unquote(s) for s in secrets}
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def credentials_in(uri: str) -> str | None:
    """What in ``uri`` is a credential (described, never quoted), or None: a user:password@
    (any userinfo: tokens travel as user names too) or a query parameter named like one."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return None  # not a URL; the fetch refuses it with its own message
    if "@" in parts.netloc:
        return "user:password@ in the URL"
    names = [pair.partition("=")[0] for pair in parts.query.split("&") if pair]
    secret = [unquote(n) for n in names if _SECRET_QUERY.search(unquote(n))]
    return f"query parameter {secret[0]!r}" if secret else None


def scrub_secrets(text: str) -> str:
    """``text`` with every secret this process knows of blanked: the credentials of the
    URIs in :data:`URI_ENV`, the values of :data:`SECRET_ENV`, and the user:password@ of
    any URL in it."""
    for name in URI_ENV:
        if uri := os.environ.get(name):
            text = scrub(text, uri)
    for name in SECRET_ENV:
        if (value := os.environ.get(name, "")) and len(value) >= 4:  # not a placeholder like "x"
            text = text.replace(value, "***")
    return _USERINFO.sub(r"\g<scheme>***@", text)


class ScrubbingFilter(logging.Filter):
    """A log handler filter that passes every record through :func:`scrub_secrets`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if (clean := scrub_secrets(message)) != message:
            record.msg, record.args = clean, None
        return True
