"""Elastic channels and resolutions (Anycost GAN, DESIGN.md section 5) for both
architectures: the StyleGAN2 teacher (:class:`Generator`) and the student
(:class:`MobileSynthesis`).

A sub-network runs the first k channels of every layer (``widths``, one count per
layer in the architecture's ``conv_widths`` layout) and may stop early at a lower
output resolution (the teacher at that resolution's ToRGB, the student at the head
of the level that gives that image size). Its weights are the leading corner of
every full tensor, and its equalized-lr scales keep the full network's fan-ins
(``channels`` in the config), as Anycost's ``first_k_oup`` slicing does.

* :func:`subnet`: a physically smaller copy (evaluation, search, export).
* :class:`Elastic`: runs sub-networks on views of the full network's parameters,
  so a training step on a sub-network updates the shared weights.
* :func:`sort_channels_`: reorders every layer's channels by importance (the
  magnitude of the kernels that read them) without changing the full network's
  function, so that first-k sub-networks keep the most important channels.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import NamedTuple, TypeVar

import torch
from torch import nn
from torch.func import functional_call

from .mobile import MobileSynthesis, ModulatedDenseConv2d, StudentConfig
from .stylegan2 import Generator, StyleGAN2Config, resolutions

Config = StyleGAN2Config | StudentConfig
Net = TypeVar("Net", Generator, MobileSynthesis)
QUANTUM = 4  # widths are multiples of 4: IDWT subbands, and SIMD-friendly on phones


def n_widths(cfg: Config, output_resolution: int | None = None) -> int:
    """Entries of the width list of ``cfg``'s architecture stopped at ``output_resolution``."""
    r = output_resolution or cfg.resolution
    return 2 * (r.bit_length() - 1) - (2 if isinstance(cfg, StyleGAN2Config) else 4)


def output_resolutions(cfg: Config, minimum: int = 8) -> list[int]:
    """Output resolutions a sub-network of ``cfg`` can stop at (the student needs 8+)."""
    return [r for r in resolutions(cfg.resolution) if r >= max(minimum, 8)]


def sub_config(cfg: Config, widths: Sequence[int] | None = None,
               output_resolution: int | None = None) -> Config:
    """The config of a sub-network: ``widths`` for the full length or for the output
    resolution's (later entries are ignored); raises ValueError naming what does not fit."""
    r = output_resolution or cfg.resolution
    if r not in output_resolutions(cfg):
        raise ValueError(f"output resolution must be one of {output_resolutions(cfg)}, got {r}")
    n_full, n = n_widths(cfg), n_widths(cfg, r)
    if widths is not None and len(widths) not in (n_full, n):
        raise ValueError(f"widths need {n_full} entries (or {n} for output resolution {r}), "
                         f"got {len(widths)}")
    is_teacher = isinstance(cfg, StyleGAN2Config)
    top = r if is_teacher else r // 2  # the student's features are at half the image size
    channels = {k: c for k, c in cfg.channels.items() if k <= top}
    widths = None if widths is None else [int(w) for w in widths[:n]]
    full = cfg.model_copy(update={"resolution": r, "channels": channels, "widths": None})
    if widths == full.full_widths:
        widths = None
    return type(cfg).model_validate({**full.model_dump(), "widths": widths})


def corner(full: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The leading corner of ``full`` with ``shape``: the first k entries of every dim."""
    return full[tuple(slice(0, n) for n in shape)]


def _sliced_state(model: nn.Module, sub: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``sub`` as a corner (a view) of ``model``'s."""
    full = dict(model.named_parameters()) | dict(model.named_buffers())
    return {name: corner(full[name], t.shape)
            for name, t in (*sub.named_parameters(), *sub.named_buffers())}


@torch.no_grad()
def subnet(model: Net, widths: Sequence[int] | None = None,
           output_resolution: int | None = None) -> Net:
    """A physically sliced copy of ``model``: first-k channels, stopped at
    ``output_resolution``; same outputs as :class:`Elastic` on the same config."""
    cfg = sub_config(model.cfg, widths, output_resolution)
    device = next(model.parameters()).device
    with torch.device("meta"):
        sub = type(model)(cfg)
    sub = sub.to_empty(device=device)
    targets = dict(sub.named_parameters()) | dict(sub.named_buffers())
    for name, t in _sliced_state(model, sub).items():
        targets[name].data = t.clone()  # the full network's dtype and device
    return sub.train(model.training)


class _Method(nn.Module):
    """Calls one method of ``net`` (functional_call only calls forward)."""

    def __init__(self, net: nn.Module, method: str) -> None:
        super().__init__()
        self.net, self.method = net, method

    def forward(self, *args, **kwargs):
        return getattr(self.net, self.method)(*args, **kwargs)


class Elastic:
    """Runs sub-networks of ``model`` on views of its parameters (gradients reach them).

        elastic = Elastic(student)
        out = elastic(widths, 32, "forward_all", wplus, noise)   # trains the shared weights
    """

    def __init__(self, model: Generator | MobileSynthesis) -> None:
        self.model = model
        self._skeletons: dict[tuple, _Method] = {}

    def skeleton(self, widths: Sequence[int] | None, output_resolution: int | None,
                 method: str) -> _Method:
        """A weightless (meta-device) module of the sub-network, built once per config."""
        cfg = sub_config(self.model.cfg, widths, output_resolution)
        key = (tuple(cfg.layer_widths), cfg.resolution, method)
        if key not in self._skeletons:
            with torch.device("meta"):
                self._skeletons[key] = _Method(type(self.model)(cfg), method)
        return self._skeletons[key]

    def __call__(self, widths: Sequence[int] | None, output_resolution: int | None,
                 method: str, *args, **kwargs):
        skeleton = self.skeleton(widths, output_resolution, method)
        state = {f"net.{k}": v for k, v in _sliced_state(self.model, skeleton.net).items()}
        return functional_call(skeleton, state, args, kwargs, strict=True)


# -- configurations ------------------------------------------------------------------
def quantize(channels: float, full: int) -> int:
    """A width near ``channels``: a multiple of QUANTUM, at least QUANTUM, at most full."""
    return min(full, max(QUANTUM, round(channels / QUANTUM) * QUANTUM))


def uniform_widths(cfg: Config, ratio: float, output_resolution: int | None = None) -> list[int]:
    """Every layer at ``ratio`` of its full width (Anycost's uniform channel ratio)."""
    if not 0 < ratio <= 1:
        raise ValueError(f"channel ratio must be in (0, 1], got {ratio}")
    full = cfg.full_widths[: n_widths(cfg, output_resolution)]
    return [quantize(f * ratio, f) for f in full]


class Arch(NamedTuple):
    """One sampled sub-network: per-layer widths (full length) and output resolution."""

    widths: list[int]
    resolution: int

    def encode(self, cfg: Config) -> torch.Tensor:
        """Anycost's g_arch for the conditioned discriminator: each layer's width ratio
        (0 past the output resolution), then a one-hot of the output resolution."""
        full = cfg.full_widths
        n = n_widths(cfg, self.resolution)
        ratios = [w / f if i < n else 0.0 for i, (w, f) in enumerate(zip(self.widths, full, strict=True))]
        res = [float(r == self.resolution) for r in output_resolutions(cfg)]
        return torch.tensor(ratios + res)


def arch_dim(cfg: Config) -> int:
    return len(cfg.full_widths) + len(output_resolutions(cfg))


def sample_arch(cfg: Config, rng: random.Random, ratios: Sequence[float], mode: str,
                min_resolution: int | None = None) -> Arch:
    """Anycost's sampling: ``uniform`` (one ratio for all layers), ``flexible`` (a ratio per
    layer) or ``sandwich`` (full network 1/4, smallest 1/4, flexible 1/2); the output
    resolution is drawn from those >= ``min_resolution`` (None: always the full one)."""
    full = cfg.full_widths
    res = output_resolutions(cfg, min_resolution) if min_resolution else [cfg.resolution]
    draw = rng.random()
    if mode == "sandwich" and draw < 0.25:
        return Arch(list(full), cfg.resolution)
    if mode == "sandwich" and draw < 0.5:
        return Arch(uniform_widths(cfg, min(ratios)), min(res))
    resolution = rng.choice(res)
    if mode == "uniform":
        return Arch(uniform_widths(cfg, rng.choice(ratios)), resolution)
    if mode not in ("flexible", "sandwich"):
        raise ValueError(f"sampling mode must be uniform, flexible or sandwich, got {mode!r}")
    return Arch([quantize(f * rng.choice(ratios), f) for f in full], resolution)


# -- importance sorting ----------------------------------------------------------------
class _Use(NamedTuple):
    """Where a layer's channels appear: tensor ``name``, along ``dim``, in blocks of ``unit``
    consecutive entries (4 where they feed an IDWT); ``score``: a kernel that reads them."""

    name: str
    dim: int
    unit: int = 1
    score: bool = False


def _teacher_groups(g: Generator) -> list[list[_Use]]:
    def reads(conv: str) -> list[_Use]:  # a modulated conv reading the channels
        return [_Use(f"{conv}.weight", 2, score=True), _Use(f"{conv}.modulation.weight", 0),
                _Use(f"{conv}.modulation.bias", 0)]

    def writes(layer: str) -> list[_Use]:
        return [_Use(f"{layer}.conv.weight", 1), _Use(f"{layer}.activate.bias", 0)]

    n = len(g.convs)
    groups = [[_Use("input.input", 1), *reads("conv1.conv")],
              [*writes("conv1"), *reads("to_rgb1.conv"), *(reads("convs.0.conv") if n else [])]]
    for j in range(n):
        readers = reads(f"convs.{j + 1}.conv") if j + 1 < n else []
        if j % 2:
            readers += reads(f"to_rgbs.{j // 2}.conv")
        groups.append([*writes(f"convs.{j}"), *readers])
    return groups


def _student_groups(s: MobileSynthesis) -> list[list[_Use]]:
    def reads(layer: str, unit: int) -> list[_Use]:  # a modulated conv reading them
        c = f"{layer}.conv"
        conv = s.get_submodule(c)
        uses = ([_Use(f"{c}.weight", 1, unit, True)] if isinstance(conv, ModulatedDenseConv2d)
                else [_Use(f"{c}.weight_dw", 0, unit), _Use(f"{c}.weight_pw", 1, unit, True)])
        uses += [_Use(f"{c}.modulation.weight", 0, unit), _Use(f"{c}.modulation.bias", 0, unit)]
        return uses + ([_Use(f"{c}.style_inv", 0, unit)] if conv.demodulation == "fused" else [])

    def writes(layer: str, unit: int) -> list[_Use]:
        conv = s.get_submodule(f"{layer}.conv")
        return [_Use(f"{layer}.conv.{conv.out_weight}", 0, unit), _Use(f"{layer}.activate.bias", 0, unit)]

    def head_and_next(head: str, b: int) -> tuple[int, list[_Use]]:
        """Readers of a level output: its head and, through the IDWT, level b's conv1."""
        unit = 4 if b < len(s.levels) else 1
        uses = [_Use(f"{head}.weight", 1, unit, True), _Use(f"{head}.modulation.weight", 0, unit),
                _Use(f"{head}.modulation.bias", 0, unit)]
        if b < len(s.levels):
            uses += [_Use(f"levels.{b}.up.modulation.weight", 0, 4),
                     _Use(f"levels.{b}.up.modulation.bias", 0, 4), *reads(f"levels.{b}.conv1", 1)]
        return unit, uses

    unit, readers = head_and_next("head1", 0)
    groups = [[_Use("input.input", 1), *reads("conv1", 1)], [*writes("conv1", unit), *readers]]
    for b in range(len(s.levels)):
        groups.append([*writes(f"levels.{b}.conv1", 1), *reads(f"levels.{b}.conv2", 1)])
        unit, readers = head_and_next(f"levels.{b}.head", b + 1)
        groups.append([*writes(f"levels.{b}.conv2", unit), *readers])
    return groups


class Permutation(NamedTuple):
    name: str
    dim: int
    index: torch.Tensor


@torch.no_grad()
def sort_channels_(model: Generator | MobileSynthesis) -> list[Permutation]:
    """Reorder the channels of every layer of a full network, most important first.

    Importance of a channel: the L1 magnitude of the kernel weights that read it (the
    next conv's input slice, the ToRGB/head's), as Anycost's sort_channel (which also
    weighs by mean |style|). Every tensor that writes or reads the channel is permuted
    alike, so the network computes the same function. Returns the permutations applied,
    to apply to copies (EMA) and optimizer state with :func:`permute_`.
    """
    if model.cfg.widths is not None:
        raise ValueError("sort the full network, not a sub-network")
    groups = _teacher_groups(model) if isinstance(model, Generator) else _student_groups(model)
    tensors = dict(model.named_parameters())
    order: list[Permutation] = []
    for uses in groups:
        scores = []
        for u in (u for u in uses if u.score):
            t = tensors[u.name].abs().transpose(0, u.dim).flatten(1).sum(1)
            scores.append(t.view(-1, u.unit).sum(1))
        perm = torch.stack(scores).sum(0).argsort(descending=True, stable=True)
        for u in uses:
            index = (perm[:, None] * u.unit + torch.arange(u.unit, device=perm.device)).flatten()
            order.append(Permutation(u.name, u.dim, index))
    permute_(tensors, order)
    return order


@torch.no_grad()
def permute_(tensors: dict[str, torch.Tensor], order: list[Permutation]) -> None:
    """Apply permutations from :func:`sort_channels_` in place (parameters keep identity)."""
    for p in order:
        t = tensors[p.name]
        t.data = t.data.index_select(p.dim, p.index.to(t.device))


def permute_optimizer_(opt: torch.optim.Optimizer, model: nn.Module, order: list[Permutation]) -> None:
    """Permute an optimizer's per-parameter state (Adam's moments) like the parameters."""
    params = dict(model.named_parameters())
    for p in order:
        state = opt.state.get(params[p.name], {})
        for key, t in state.items():
            if torch.is_tensor(t) and t.shape == params[p.name].shape:
                state[key] = t.index_select(p.dim, p.index.to(t.device))
