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


def detect_format(path: str | Path) -> Format:
    """Sniff the first bytes: safetensors header, torch zip archive, or a raw pickle."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "project"
    if head.startswith(b"PK\x03\x04"):
        return "rosinality"  # torch.save's zip container
    if head[:1] == b"\x80":
        # torch's legacy (pre-1.6) format is also a pickle, starting with its magic number.
        return "rosinality" if head[2:3] == b"\x8a" else "nvidia"
    raise CheckpointError(
        f"{path}: unknown checkpoint format (first bytes {head[:8]!r}); expected safetensors "
        f"(project), a torch .pt (rosinality/stylegan2-pytorch) or a network pickle (NVIDIA)"
    )


def load_teacher(path: str | Path, format: str = "auto") -> LoadedTeacher:
    """Load a StyleGAN2 teacher from any supported format (``auto`` sniffs it)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if format not in ("auto", *FORMATS):
        raise CheckpointError(f"unknown checkpoint format {format!r}; expected auto or {FORMATS}")
    fmt = detect_format(path) if format == "auto" else format
    if fmt == "project":
        generator, notes = load_teacher_file(path)
    elif fmt == "rosinality":
        from .rosinality import load_rosinality

        generator, notes = load_rosinality(path)
    else:
        from .nvidia import load_nvidia

        generator, notes = load_nvidia(path)
    return LoadedTeacher(generator, fmt, notes)
