"""Build a teacher Generator from a state dict in rosinality's layout, with clear errors.

Both rosinality ``.pt`` files and converted NVIDIA pickles end here: the
architecture is inferred from the tensor shapes, then every key and shape is
checked against a freshly built Generator before anything is loaded.
"""

from __future__ import annotations

import re

import torch

from ..errors import CheckpointError
from ..models.ops import make_fir_kernel
from ..models.stylegan2 import BLUR_TAPS, Generator, StyleGAN2Config

# Constant FIR kernels rosinality stores as buffers; ours are not persistent.
_FIR_KEY = re.compile(r"^(convs\.\d+\.conv\.blur|to_rgbs\.\d+\.upsample)\.kernel$")


def infer_config(state: dict[str, torch.Tensor], where: str, **extra) -> StyleGAN2Config:
    """Resolution, channels, style dim and mapping depth from a rosinality-layout state dict."""
    try:
        n_mlp = len([k for k in state if re.fullmatch(r"style\.\d+\.weight", k)])
        style_dim = state["style.1.weight"].shape[1]
        n_blocks = len([k for k in state if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
        channels = {4: state["input.input"].shape[1]}
        for b in range(n_blocks):
            channels[2 ** (b + 3)] = state[f"convs.{2 * b}.conv.weight"].shape[1]
    except KeyError as e:
        raise CheckpointError(
            f"{where}: not a StyleGAN2 generator state dict: missing key {e.args[0]!r}"
        ) from None
    except (IndexError, AttributeError) as e:
        raise CheckpointError(f"{where}: malformed StyleGAN2 tensor shapes ({e})") from None
    try:
        return StyleGAN2Config(
            resolution=2 ** (n_blocks + 2), style_dim=style_dim, n_mlp=n_mlp,
            channels=channels, **extra,
        )
    except ValueError as e:
        raise CheckpointError(f"{where}: inferred architecture is invalid: {e}") from None


def generator_from_state(
    state: dict[str, torch.Tensor], where: str, cfg: StyleGAN2Config | None = None,
    w_avg: torch.Tensor | None = None,
) -> tuple[Generator, dict[str, str]]:
    """Load ``state`` into a Generator; returns it and notes on what was filled in.

    ``w_avg`` is taken from the state dict, else from the argument, else estimated
    from the mapping network (noted, since truncation then uses an estimate).
    """
    state = dict(state)
    for key in [k for k in state if _FIR_KEY.match(k)]:
        kernel = state.pop(key)
        expected = make_fir_kernel(BLUR_TAPS)
        if kernel.shape != expected.shape or not torch.allclose(
            kernel / kernel.sum(), expected, atol=1e-6
        ):
            raise CheckpointError(
                f"{where}: {key} is not the [1,3,3,1] blur kernel this generator supports"
            )
    notes: dict[str, str] = {}
    if "w_avg" not in state and w_avg is not None:
        state["w_avg"] = w_avg.reshape(-1)
        notes["w_avg"] = "from checkpoint"
    cfg = cfg or infer_config(state, where)
    generator = Generator(cfg)
    expected = generator.state_dict()
    missing = [k for k in expected if k not in state and k != "w_avg"]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: state dict does not match a StyleGAN2 generator of resolution "
            f"{cfg.resolution}: missing keys {_few(missing)}, unexpected keys {_few(unexpected)}"
        )
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{where}: {key} is a {type(tensor).__name__}, not a tensor")
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"{where}: {key} has shape {list(tensor.shape)}, "
                f"expected {list(expected[key].shape)} for the inferred architecture"
            )
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: {key} contains NaN or inf")
    has_w_avg = "w_avg" in state
    generator.load_state_dict({k: v.float() for k, v in state.items()}, strict=False)
    if not has_w_avg:
        with torch.no_grad():
            generator.w_avg.copy_(generator.mean_w())
        notes["w_avg"] = "estimated from 4096 mapped samples (checkpoint has none)"
    notes.setdefault("w_avg", "from checkpoint")
    return generator.eval(), notes


def _few(keys: list[str], n: int = 5) -> str:
    if not keys:
        return "none"
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
