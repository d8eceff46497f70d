"""Teacher checkpoints: detect the format, load safely, save in the project's format.

Formats: ``project`` (safetensors + JSON architecture, what fetch_teacher writes),
``rosinality`` (stylegan2-pytorch ``.pt``, ``g_ema``), ``nvidia``
(stylegan2-ada-pytorch / stylegan3 network pickles, ``G_ema``, read by a
restricted unpickler). None of them can execute code from the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..errors import CheckpointError
from ..models.stylegan2 import Generator
from .project import load_teacher_file, save_teacher

Format = Literal["project", "rosinality", "nvidia"]
FORMATS: tuple[str, ...] = ("project", "rosinality", "nvidia")

__all__ = ["FORMATS", "Format", "LoadedTeacher", "detect_format", "load_teacher", "save_teacher"]


@dataclass
class LoadedTeacher:
    generator: Generator
    format: str
    notes: dict[str, str] = field(default_factory=dict)


# What each format is, for messages.
_DESCRIPTIONS = {
    "project": "a project-format (safetensors) checkpoint",
    "rosinality": "a rosinality/stylegan2-pytorch checkpoint",
    "nvidia": "an NVIDIA network pickle",
}
# For a file of no known format: often a web page (a login or download page) served in its place.
_CHECK_SOURCE = "check that the source is the checkpoint file itself"


def _sniff(path: Path) -> tuple[Format | None, bytes]:
    """(format the first bytes show, or None; those bytes): safetensors header, torch zip
    archive, or a raw pickle."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "project", head
    if head.startswith(b"PK\x03\x04"):
        return "rosinality", head  # torch.save's zip container
    if head[:1] == b"\x80":
        # torch's legacy (pre-1.6) format is also a pickle, starting with its magic number.
        return ("rosinality" if head[2:3] == b"\x8a" else "nvidia"), head
    return None, head


def detect_format(path: str | Path, where: str | None = None) -> Format:
    """The format of the file at ``path`` from its first bytes; ``where`` names it in the
    error (default: the path)."""
    fmt, head = _sniff(Path(path))
    if fmt is None:
        raise CheckpointError(
            f"{where or path}: unknown checkpoint format (first bytes {head[:8]!r}); expected "
            f"safetensors (project), a torch .pt (rosinality/stylegan2-pytorch) or a network "
            f"pickle (NVIDIA); {_CHECK_SOURCE}"
        )
    return fmt


def _load(path: Path, fmt: str, where: str) -> LoadedTeacher:
    if fmt == "project":
        generator, notes = load_teacher_file(path, where)
    elif fmt == "rosinality":
        from .rosinality import load_rosinality

        generator, notes = load_rosinality(path, where)
    else:
        from .nvidia import load_nvidia

        generator, notes = load_nvidia(path, where)
    return LoadedTeacher(generator, fmt, notes)


def _wrong_format(path: Path, where: str, forced: str, format_key: str) -> CheckpointError | None:
    """The error for a file the reader of the ``forced`` format failed on, when the file looks
    like another format (or none); None when it does look like ``forced``."""
    try:
        looks, head = _sniff(path)
    except OSError:
        return None  # unreadable: the reader's own error says so
    if looks == forced:
        return None
    if looks is None:
        return CheckpointError(
            f"{where}: {format_key} is {forced!r} but the file is not a checkpoint of any known "
            f"format (first bytes {head[:8]!r}); {_CHECK_SOURCE}"
        )
    return CheckpointError(
        f"{where}: {format_key} is {forced!r} but the file looks like {_DESCRIPTIONS[looks]}; "
        f"set {format_key}: {looks} or auto"
    )


def load_teacher(path: str | Path, format: str = "auto", *, where: str | None = None,
                 format_key: str = "format") -> LoadedTeacher:
    """Load a StyleGAN2 teacher from any supported format (``auto`` sniffs it).

    ``where`` names the file in errors (default: its path; a downloaded file is better
    named by the source it came from than by its cache path). ``format_key`` names the
    setting a forced ``format`` came from, for the error when the file is of another format.
    """
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise CheckpointError(f"{where}: no such checkpoint file")
    if format not in ("auto", *FORMATS):
        raise CheckpointError(f"unknown checkpoint format {format!r}; expected auto or {FORMATS}")
    if format == "auto":
        return _load(path, detect_format(path, where), where)
    try:
        return _load(path, format, where)
    except CheckpointError as e:
        # The reader of the wrong format fails with a misleading reason of its own (a
        # "corrupt" pickle, objects that "could run code"): name the format the file has.
        wrong = _wrong_format(path, where, format, format_key)
        if wrong is None:
            raise  # the file is of the forced format: its reader's reason stands
        raise wrong from e
