"""rosinality/stylegan2-pytorch checkpoints (``.pt``; MobileStyleGAN and Anycost GAN use them).

The file is a ``torch.save`` dict: ``g_ema`` (the generator state dict we want),
usually ``g``, ``d``, optimizer states and ``args`` (an ``argparse.Namespace``);
converted official weights carry ``latent_avg``. Loaded with
``weights_only=True`` so no code in the file can run; ``Namespace`` is the one
extra class allowed, since training checkpoints contain it.
"""

from __future__ import annotations

import argparse
import pickle
import re
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.stylegan2 import Generator
from .state import generator_from_state

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
# Sentences of torch's message that tell the user to lift the restriction (or are boilerplate):
# never passed on.
_UNSAFE_ADVICE = re.compile(
    r"weights.only|safe_globals|trust|allowlist|documentation|file an issue", re.IGNORECASE
)


def refusal_reason(error: BaseException) -> str:
    """What ``torch.load(weights_only=True)`` refused, without torch's advice.

    torch's message suggests ``weights_only=False`` or allowlisting the global, which for a
    file that may be hostile means running its code; only the refused global (or, failing
    that, torch's own description of the problem with the advice sentences removed) is kept.
    """
    text = str(error)
    found = _GLOBAL.search(text)
    if found:
        return f"it imports {found.group(1)}"
    _, marker, detail = text.partition("WeightsUnpickler error:")
    for line in (detail if marker else text).splitlines():
        kept = [s for s in re.split(r"(?<=[.!?:])\s+", line.strip())
                if s and not _UNSAFE_ADVICE.search(s)]
        if kept:
            return " ".join(kept)[:200]
    return "an object the weights-only loader does not allow"


def refused_file_error(path: str | Path, error: BaseException, what: str = "checkpoint") -> CheckpointError:
    """The error for a file ``torch.load(weights_only=True)`` refused: what was refused, and
    how to go on without ever unpickling the file unrestricted."""
    return CheckpointError(
        f"{path}: refusing to load: the {what} holds objects other than tensors and plain "
        f"containers ({refusal_reason(error)}), which could run code; nothing from the file "
        f"was executed. Do not open this file with an unrestricted torch.load or pickle. If it "
        f"comes from a source you trust, load it there and re-save only its tensors (a state "
        f"dict of tensors with torch.save, or safetensors; a teacher can also be converted to "
        f"the project format with pipeline.checkpoints.save_teacher), then use that file"
    )


def read_rosinality(path: str | Path, where: str | None = None) -> dict:
    """The checkpoint dict, loaded without executing code; ``where`` names the file in errors."""
    where = where or str(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise refused_file_error(where, e) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{where}: not a readable torch checkpoint ({e})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{where}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def load_rosinality(path: str | Path, where: str | None = None) -> tuple[Generator, dict[str, str]]:
    """Generator from ``ckpt["g_ema"]`` (or a bare generator state dict); ``where`` names the
    file in errors (default: its path)."""
    where = where or str(path)
    ckpt = read_rosinality(path, where)
    if "g_ema" in ckpt:
        state = ckpt["g_ema"]
    elif "style.1.weight" in ckpt:
        state = ckpt
    else:
        raise CheckpointError(
            f"{where}: no 'g_ema' generator in this checkpoint (top-level keys: "
            f"{sorted(map(str, ckpt))[:10]}); expected rosinality/stylegan2-pytorch's layout"
        )
    if not isinstance(state, dict):
        raise CheckpointError(f"{where}: 'g_ema' is a {type(state).__name__}, not a state dict")
    w_avg = ckpt.get("latent_avg")
    return generator_from_state(state, where, w_avg=w_avg)


def save_rosinality(generator: Generator, path: str | Path) -> None:
    """Write ``generator`` as rosinality does (``g_ema`` + ``latent_avg``), for interop and tests."""
    state = {k: v for k, v in generator.state_dict().items() if k != "w_avg"}
    # rosinality keeps the FIR kernels as buffers; write them so the file is byte-faithful.
    for name, module in generator.named_modules():
        if name.endswith((".blur", ".upsample")):
            state[f"{name}.kernel"] = module.kernel.clone()
    torch.save({"g_ema": state, "latent_avg": generator.w_avg.clone()}, path)
