"""The project's own teacher format: one safetensors file, architecture as JSON in its header.

safetensors holds raw tensors only (nothing to execute), and keeping the config in
the same file means weights and architecture can never be separated or mismatched.
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..io import atomic_path
from ..models.stylegan2 import Generator, StyleGAN2Config
from .state import generator_from_state

FORMAT_KEY = "stylegan_mobile.format"
CONFIG_KEY = "stylegan_mobile.config"
TEACHER_FORMAT = "stylegan2-teacher/v1"


def save_teacher(generator: Generator, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write weights + architecture atomically; ``metadata`` (strings) goes into the header."""
    header = {**(metadata or {}), FORMAT_KEY: TEACHER_FORMAT,
              CONFIG_KEY: generator.cfg.model_dump_json()}
    state = {k: v.detach().contiguous().cpu() for k, v in generator.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=header)


def read_header(path: str | Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file ({e})") from None


def load_teacher_file(path: str | Path) -> tuple[Generator, dict[str, str]]:
    header = read_header(path)
    if header.get(FORMAT_KEY) != TEACHER_FORMAT or CONFIG_KEY not in header:
        raise CheckpointError(
            f"{path}: safetensors file without a StyleGAN2 teacher header "
            f"(expected {FORMAT_KEY}={TEACHER_FORMAT!r} and {CONFIG_KEY})"
        )
    try:
        cfg = StyleGAN2Config.model_validate(json.loads(header[CONFIG_KEY]))
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid architecture config in header: {e}") from None
    with safe_open(str(path), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    return generator_from_state(state, str(path), cfg=cfg)
