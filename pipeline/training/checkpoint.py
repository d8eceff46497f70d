"""Training snapshots: everything needed to continue a run exactly where it stopped.

A snapshot holds the student, its EMA, the discriminator, both optimizers, the
grad scaler, the sampling RNG and the validation history, plus a digest of the
settings that shape training. Written atomically (temp file + rename), so a run
killed at any moment, even by SIGKILL, leaves only complete snapshots; read with
``weights_only=True``. The newest two are kept: if the newest is unreadable the
previous one is used. Snapshots from different settings (another teacher, other code,
hyper-parameters) are never resumed: they are moved aside into ``stale-<digest>/``
and training starts fresh. If snapshots exist but none can be read, loading fails
rather than silently restarting a long run.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ..checkpoints.rosinality import refusal_reason
from ..errors import CheckpointError
from ..io import atomic_path

log = logging.getLogger(__name__)
_NAME = re.compile(r"^step-(\d{8})\.pt$")
KEEP = 2


def snapshot_path(folder: str | Path, step: int) -> Path:
    return Path(folder) / f"step-{step:08d}.pt"


def save_snapshot(folder: str | Path, step: int, state: dict[str, Any]) -> Path:
    path = snapshot_path(folder, step)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        # a file object, not a path: torch names the archive's records after a path's
        # (random temporary) name, so the same state would get other bytes
        torch.save({**state, "step": step}, f)
    for old in snapshots(folder)[:-KEEP]:
        old.unlink(missing_ok=True)
    return path


def snapshots(folder: str | Path) -> list[Path]:
    """Snapshot files, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def load_latest(folder: str | Path, digest: str) -> dict[str, Any] | None:
    """The newest readable snapshot made with settings ``digest``; None to start fresh."""
    candidates = snapshots(folder)
    unreadable = []
    for path in reversed(candidates):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict) or "step" not in state or "digest" not in state:
                raise ValueError("not a training snapshot")
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
            reason = refusal_reason(e) if isinstance(e, pickle.UnpicklingError) else str(e).splitlines()[0]
            log.warning("skipping unreadable snapshot %s (%s)", path, reason)
            unreadable.append(path)
            continue
        if state["digest"] != digest:
            stale = Path(folder) / f"stale-{str(state['digest'])[:12]}"
            stale.mkdir(exist_ok=True)
            for old in candidates:
                if old.exists():
                    os.replace(old, stale / old.name)
            log.warning("snapshots in %s were made with other settings, teacher or training code; "
                        "moved to %s, starting fresh", folder, stale)
            return None
        log.info("resuming from %s (step %d)", path, state["step"])
        return state
    if unreadable:
        raise CheckpointError(
            f"{Path(folder)}: no readable snapshot ({', '.join(p.name for p in unreadable)} are "
            f"corrupt); remove the folder to start over"
        )
    return None

