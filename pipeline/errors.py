"""Errors the pipeline raises for bad input.

Every error names the offending thing (a params key, a file, a URL, a checkpoint
key) and what was expected, so a component can print it and exit non-zero
without a traceback. Also the helpers that find the reason inside an exception chain.
"""

from __future__ import annotations

from collections.abc import Iterator


class PipelineError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ParamsError(PipelineError):
    """params.yaml (or an override) is invalid."""


class FetchError(PipelineError):
    """A source could not be fetched (unreachable, not found, access denied, truncated)."""


class ChecksumError(FetchError):
    """The fetched bytes do not match the pinned sha256."""


class CheckpointError(PipelineError):
    """A checkpoint is of an unknown format, unsafe, or does not fit the architecture."""


class DiskFullError(PipelineError):
    """No space left (or over quota) where an output or a download was being written."""


def causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception it wraps: causes, contexts, and the ``reason``/args that
    requests and urllib3 nest theirs in."""
    stack: list[BaseException] = [exc]
    seen: set[int] = set()
    while stack:
        e = stack.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        more = [e.__cause__, e.__context__, getattr(e, "reason", None), *e.args]
        stack += [m for m in more if isinstance(m, BaseException)]


def os_reason(exc: BaseException) -> str | None:
    """The innermost OS-level reason (e.g. "Connection refused") in an exception chain.

    requests/urllib3 exceptions quote the full URL (query string included) in their own
    messages, so we report the underlying socket error instead.
    """
    for e in causes(exc):
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        if isinstance(e, TimeoutError):
            return "timed out"
    return None
