"""The project's own format: one safetensors file, architecture as JSON in its header.

Used for teachers (``stylegan2-teacher/v1``) and students (``mobile-student/v1``).

safetensors holds raw tensors only (nothing to execute), and keeping the config in
the same file means weights and architecture can never be separated or mismatched.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from ..errors import CheckpointError
from ..io import atomic_path
from ..models.mobile import MobileSynthesis, StudentConfig
from ..models.stylegan2 import Generator, StyleGAN2Config
from .state import generator_from_state

FORMAT_KEY = "stylegan_mobile.format"
CONFIG_KEY = "stylegan_mobile.config"
TEACHER_FORMAT = "stylegan2-teacher/v1"
STUDENT_FORMAT = "mobile-student/v1"
# Config keys added after files were written without them -> what those files' weights hold.
STUDENT_LEGACY = {"input_layer": "separable"}  # the 4x4 conv was DW-separable before


def safetensors_bytes(state: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """A safetensors file whose bytes depend only on its content: the library writes the
    header's metadata in hash-map order, different in every process, so the same weights
    would get another sha256 (and DVC, resume and caches would see a change). The header
    is rewritten with sorted keys; tensor offsets are relative to the data, so they hold."""
    raw = save(state, metadata=metadata)
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.dumps(json.loads(raw[8 : 8 + size]), sort_keys=True, separators=(",", ":"))
    header += " " * (-len(header) % 8)  # the format aligns the data to 8 bytes
    return struct.pack("<Q", len(header)) + header.encode() + raw[8 + size :]


def _save(module, fmt: str, path: str | Path, metadata: dict[str, str] | None) -> None:
    """Weights + architecture (``module.cfg``) in one safetensors file, written atomically
    (byte-identical for identical weights and metadata, with the umask's file mode)."""
    header = {**(metadata or {}), FORMAT_KEY: fmt, CONFIG_KEY: module.cfg.model_dump_json()}
    state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        tmp.write_bytes(safetensors_bytes(state, header))


def _read(path: str | Path, fmt: str, config_cls, legacy: dict | None = None,
          where: str | None = None):
    """(config, state dict, header) of a project-format file of kind ``fmt``; ``legacy``:
    values of config keys that older files lack; ``where`` names the file in errors."""
    where = where or str(path)
    header = read_header(path, where)
    if header.get(FORMAT_KEY) != fmt or CONFIG_KEY not in header:
        raise CheckpointError(
            f"{where}: not a {fmt} checkpoint (expected header {FORMAT_KEY}={fmt!r} "
            f"and {CONFIG_KEY})"
        )
    try:
        cfg = config_cls.model_validate({**(legacy or {}), **json.loads(header[CONFIG_KEY])})
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{where}: invalid architecture config in header: {e}") from None
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    return cfg, state, {k: v for k, v in header.items() if k not in (FORMAT_KEY, CONFIG_KEY)}


def save_teacher(generator: Generator, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a teacher's weights + architecture atomically; ``metadata`` (strings) goes in the header."""
    _save(generator, TEACHER_FORMAT, path, metadata)


def read_header(path: str | Path, where: str | None = None) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{where or path}: not a readable safetensors file ({e})") from None


def load_teacher_file(path: str | Path, where: str | None = None) -> tuple[Generator, dict[str, str]]:
    """A teacher in the project format; ``where`` names the file in errors (default: its path)."""
    where = where or str(path)
    cfg, state, _ = _read(path, TEACHER_FORMAT, StyleGAN2Config, where=where)
    return generator_from_state(state, where, cfg=cfg)


def save_student(student: MobileSynthesis, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write a student's weights + architecture atomically."""
    _save(student, STUDENT_FORMAT, path, metadata)


def load_student(path: str | Path) -> tuple[MobileSynthesis, dict[str, str]]:
    """A student and its header metadata; errors name the file and the problem."""
    cfg, state, header = _read(path, STUDENT_FORMAT, StudentConfig, STUDENT_LEGACY)
    student = MobileSynthesis(cfg)
    try:
        student.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not match the student config: {e}") from None
    return student.eval(), header
