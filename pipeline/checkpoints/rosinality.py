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
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..models.stylegan2 import Generator
from .state import generator_from_state


def read_rosinality(path: str | Path) -> dict:
    """The checkpoint dict, loaded without executing code."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refusing to load: the checkpoint holds objects other than tensors and "
            f"plain containers, which could run code ({str(e).splitlines()[0]})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def load_rosinality(path: str | Path) -> tuple[Generator, dict[str, str]]:
    """Generator from ``ckpt["g_ema"]`` (or a bare generator state dict)."""
    ckpt = read_rosinality(path)
    if "g_ema" in ckpt:
        state = ckpt["g_ema"]
    elif "style.1.weight" in ckpt:
        state = ckpt
    else:
        raise CheckpointError(
            f"{path}: no 'g_ema' generator in this checkpoint (top-level keys: "
            f"{sorted(map(str, ckpt))[:10]}); expected rosinality/stylegan2-pytorch's layout"
        )
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: 'g_ema' is a {type(state).__name__}, not a state dict")
    w_avg = ckpt.get("latent_avg")
    return generator_from_state(state, str(path), w_avg=w_avg)


def save_rosinality(generator: Generator, path: str | Path) -> None:
    """Write ``generator`` as rosinality does (``g_ema`` + ``latent_avg``), for interop and tests."""
    state = {k: v for k, v in generator.state_dict().items() if k != "w_avg"}
    # rosinality keeps the FIR kernels as buffers; write them so the file is byte-faithful.
    for name, module in generator.named_modules():
        if name.endswith((".blur", ".upsample")):
            state[f"{name}.kernel"] = module.kernel.clone()
    torch.save({"g_ema": state, "latent_avg": generator.w_avg.clone()}, path)
