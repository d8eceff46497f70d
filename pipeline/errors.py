"""Errors the pipeline raises for bad input.

Every error names the offending thing (a params key, a file, a URL, a checkpoint
key) and what was expected, so a component can print it and exit non-zero
without a traceback.
"""


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
