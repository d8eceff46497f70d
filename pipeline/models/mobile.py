"""MobileStyleGAN student synthesis network (Belousov, 2021), with BlazeStyleGAN's
UpToRGB heads (Jia et al., 2023) as an option. Read beside DESIGN.md section 3.

    const 4x4 -> StyledConv (the input layer) -> head
    per level: IDWT up-sampling (modulated input, 4C -> C at 2x) -> 2 x StyledConv -> head
    head: 1x1 modulated conv to the 12-channel Haar wavelet image (or UpToRGB);
    image = IDWT(last head)            (the other heads only train: deep supervision)
    skip (option): image_k = IDWT(head_k) + up2(image_k-1), image = the last image_k
                   (StyleGAN2's output skips; every head runs at inference)

Depthwise-separable modulated conv: x' = s * x, 3x3 depthwise, 1x1 pointwise, no
non-linearity between; the composite dense kernel is w_jik = pw_ji dw_ik, so
demodulation divides output j by sigma_j = sqrt(sum_i sum_k (s_i w_jik)^2 + eps).
With ``demodulation="fused"`` s inside sigma is a trainable parameter, so sigma is
constant at inference and :func:`fold_demodulation` folds it into pw (the config
then says ``"folded"``).

The input layer (``StudentConfig.input_layer``), the one conv at 4x4:

* ``dense`` (default): StyleGAN2's modulated dense 3x3 conv, as MobileStyleGAN's
  reference code has it (same demodulation modes; fused folds into its kernel).
* ``separable``: a DW-separable conv like every other layer; what students saved
  before this option existed hold.

Cost at 1024, config-f channels (``python -m pipeline.cost``: folded, last head;
mapping network apart): the layer alone is 2,622,465 params and 38.0 MMAC dense,
529,921 and 4.5 MMAC separable; the synthesis network 7,306,395 params, 7.364
GMAC dense vs 5,213,851 and 7.331 GMAC separable (UpToRGB heads: 585 params and
0.139 GMAC fewer). The 2,092,544 parameters of the dense kernel (512 x 512 x 9
against 512 x 9 + 512 x 512) are the whole gap to the reference code.

Styles and noise come from the teacher: a level whose features have resolution r
uses the teacher's W+ entries and noise tensors of the teacher block at r (the
student's features live at half the image resolution, so the teacher's last block,
at R, has no counterpart: its two W+ entries and noise maps are not used).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Iterable
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from .stylegan2 import ConstantInput, EqualLinear, FusedLeakyReLU, NoiseInjection, resolutions
from .wavelets import dwt, idwt

# exact: per style; fused: constant (trainable); folded: fused, multiplied into the weights
Demodulation = Literal["exact", "fused", "folded"]
WAVELET_CHANNELS = 12  # Haar subbands (LL, LH, HL, HH) x RGB
UP_STYLE_INIT = 0.1  # initial gain of the IDWT up-sampling's style weights (see IDWTUpsample)
HEAD_INIT = 0.1  # initial gain of the heads' weights


class StudentConfig(BaseModel):
    """Architecture of a student; stored as JSON beside its weights."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resolution: int = Field(description="output image size (the teacher's)")
    style_dim: int = Field(512, gt=0)
    channels: dict[int, int] = Field(description="feature channels per feature resolution 4..R/2")
    demodulation: Demodulation = Field("fused", description="exact | fused | folded: "
                                       "what fold_demodulation leaves (no style_inv)")
    head: Literal["wavelet", "uptorgb"] = "wavelet"
    skip: bool = Field(
        False, description="the image sums every level's head (each added to the bilinear x2 "
        "of the image before, StyleGAN2's output skips) instead of being the last head's alone "
        "(MobileStyleGAN, whose other heads only train)")
    input_layer: Literal["dense", "separable"] = Field(
        "dense", description="the 4x4 conv after the constant: a dense modulated 3x3 conv "
        "(MobileStyleGAN's code) or a DW-separable one like every other layer. Files saved "
        "before this field existed hold separable (pipeline.checkpoints.project reads them so)")
    widths: list[int] | None = Field(
        None, description="a sub-network's channels, first-k of each layer (conv_widths' "
        "layout); None = the full network. ``channels`` stays the full network's: its "
        "fan-ins fix the equalized-lr scales, so a sub-network computes with the same weights",
    )

    @model_validator(mode="after")
    def _check(self) -> StudentConfig:
        r = self.resolution
        if r < 8 or r > 4096 or r & (r - 1):
            raise ValueError(f"resolution must be a power of two in [8, 4096], got {r}")
        expected = resolutions(r // 2)
        if sorted(self.channels) != expected:
            raise ValueError(
                f"channels must have keys {expected} (feature resolutions 4..{r // 2}), "
                f"got {sorted(self.channels)}"
            )
        bad = {k: c for k, c in self.channels.items() if c <= 0 or (k < r // 2 and c % 4)}
        if bad:
            raise ValueError(
                f"channels must be positive and, where they enter a level (below {r // 2}), "
                f"multiples of 4 (IDWT splits them into 4 subbands), got {bad}"
            )
        if self.widths is not None:
            full = self.full_widths
            if len(self.widths) != len(full) or not all(
                0 < w <= f for w, f in zip(self.widths, full, strict=True)
            ):
                raise ValueError(f"widths must be {len(full)} channel counts, each in [1, full] "
                                 f"with full = {full}, got {self.widths}")
            if any(w % 4 for w in self.widths[1:-1:2]):
                raise ValueError(f"widths entering a level (entries 1, 3, 5, ...) must be "
                                 f"multiples of 4 (IDWT subbands), got {self.widths}")
        return self

    @classmethod
    def from_teacher(
        cls, teacher_channels: dict[int, int], resolution: int, style_dim: int, **kw
    ) -> StudentConfig:
        """MobileStyleGAN's choice: the teacher's channel count at each feature resolution
        (512 x 5, 256, 128, 64 for a 1024 config-f teacher), rounded up to a multiple of 4."""
        channels = {r: -(-teacher_channels[r] // 4) * 4 for r in resolutions(resolution // 2)}
        return cls(resolution=resolution, style_dim=style_dim, channels=channels, **kw)

    @property
    def levels(self) -> list[int]:
        """Feature resolution of each level: 4, 8, ..., R/2 (a level's image is twice that)."""
        return resolutions(self.resolution // 2)

    @property
    def full_widths(self) -> list[int]:
        return conv_widths(self.channels)

    @property
    def layer_widths(self) -> list[int]:
        """The channels this network runs: ``widths`` or, for the full network, full_widths."""
        return self.widths or self.full_widths

    @property
    def n_latent_used(self) -> int:
        """W+ entries read (the teacher's first n_latent - 2)."""
        return 2 * len(self.levels)

    @property
    def num_noise(self) -> int:
        return 2 * len(self.levels) - 1


def conv_widths(channels: dict[int, int]) -> list[int]:
    """The student's per-layer channel list (pipeline/cost.py's convention): the constant
    input's channels, conv1's output at 4x4, then conv1 and conv2 outputs of every level
    (2 log2(R) - 4 entries; 16 at 1024). Entries 1, 3, 5, ... enter a level's IDWT."""
    return [channels[r] for r in sorted(channels) for _ in (0, 1)]


class ModulatedConv(nn.Module):
    """What both modulated convs share: the activations are modulated, x' = scale * s * x
    (the same as StyleGAN2's weight modulation w'_jik = s_i w_jik, with one kernel for the
    whole batch), the conv runs, and output j is divided by sigma_j = sqrt(sum_i
    (scale s_i)^2 E_ji + eps), E_ji = sum_k w_jik^2 of the (composite) dense kernel.
    ``exact``: sigma from s, per sample; ``fused``: from a trainable stand-in for s, so
    sigma is constant at inference; ``folded``: that constant is in ``out_weight``."""

    out_weight: str  # the parameter whose dim 0 is the output channels: folding scales it

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int,
                 demodulation: Demodulation, fan_in: int | None) -> None:
        super().__init__()
        self.in_ch, self.out_ch, self.padding = in_ch, out_ch, kernel_size // 2
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        # fan_in: the full network's input channels when this is a sub-network's slice.
        self.scale = 1.0 / math.sqrt((fan_in or in_ch) * kernel_size**2)
        self.demodulation = demodulation
        if demodulation == "fused":
            # Stands in for s inside sigma; init 1 = the modulation's bias init.
            self.style_inv = nn.Parameter(torch.ones(in_ch))

    def energy(self) -> torch.Tensor:
        """E [out, in]: sum_k w_jik^2 of the dense kernel the conv computes."""
        raise NotImplementedError

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def sigma_inv(self, s: torch.Tensor) -> torch.Tensor:
        """1 / sigma_j for styles s [B, in] -> [B, out]."""
        return torch.rsqrt((self.scale * s).pow(2) @ self.energy().t() + 1e-8)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = self.modulation(w)  # [B, in]
        x = self.conv(x * (self.scale * s)[:, :, None, None])
        if self.demodulation == "exact":
            x = x * self.sigma_inv(s)[:, :, None, None]
        elif self.demodulation == "fused":
            x = x * self.sigma_inv(self.style_inv[None])[:, :, None, None]
        return x

    @torch.no_grad()
    def fold_(self) -> None:
        """Fold the constant fused demodulation into the output weights (inference)."""
        if self.demodulation != "fused":
            raise ValueError(f"only fused demodulation folds, this conv is {self.demodulation!r}")
        getattr(self, self.out_weight).mul_(self.sigma_inv(self.style_inv[None]).view(-1, 1, 1, 1))
        del self.style_inv
        self.demodulation = "folded"


class ModulatedDWConv2d(ModulatedConv):
    """Modulated depthwise-separable conv: 3x3 depthwise, then 1x1 pointwise, nothing
    between; the composite dense kernel is w_jik = pw_ji dw_ik, so E_ji = pw_ji^2 sum_k dw_ik^2."""

    out_weight = "weight_pw"

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int = 3,
                 demodulation: Demodulation = "fused", fan_in: int | None = None) -> None:
        super().__init__(in_ch, out_ch, style_dim, kernel_size, demodulation, fan_in)
        self.weight_dw = nn.Parameter(torch.randn(in_ch, 1, kernel_size, kernel_size))
        self.weight_pw = nn.Parameter(torch.randn(out_ch, in_ch, 1, 1))

    def energy(self) -> torch.Tensor:
        return self.weight_pw.squeeze(-1).squeeze(-1).pow(2) * self.weight_dw.pow(2).sum([1, 2, 3])

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight_dw, padding=self.padding, groups=self.in_ch)
        return F.conv2d(x, self.weight_pw)


class ModulatedDenseConv2d(ModulatedConv):
    """StyleGAN2's modulated dense conv (MobileStyleGAN's 4x4 layer), weight [out, in, k, k]."""

    out_weight = "weight"

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, kernel_size: int = 3,
                 demodulation: Demodulation = "fused", fan_in: int | None = None) -> None:
        super().__init__(in_ch, out_ch, style_dim, kernel_size, demodulation, fan_in)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))

    def energy(self) -> torch.Tensor:
        return self.weight.pow(2).sum([2, 3])

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=self.padding)


class StyledConv(nn.Module):
    """Modulated 3x3 conv -> noise -> bias + leaky ReLU (as the teacher's StyledConv);
    depthwise-separable, or ``dense`` (the 4x4 layer by default)."""

    def __init__(self, in_ch: int, out_ch: int, style_dim: int, demodulation: Demodulation,
                 fan_in: int | None = None, dense: bool = False) -> None:
        super().__init__()
        conv = ModulatedDenseConv2d if dense else ModulatedDWConv2d
        self.conv = conv(in_ch, out_ch, style_dim, 3, demodulation, fan_in)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class IDWTUpsample(nn.Module):
    """x2 up-sampling without weights: modulate, read 4C channels as Haar subbands, IDWT -> C.

    Channel-major: input channels 4c..4c+3 are the LL, LH, HL, HH bands of output channel
    c, so a sub-network's first 4k channels are exactly the bands of its first k outputs.
    """

    def __init__(self, channels: int, style_dim: int) -> None:
        super().__init__()
        self.modulation = EqualLinear(style_dim, channels, bias_init=1.0)
        # Nothing demodulates this scale: at the convs' unit init, s ~ 1 + N(0, |w|^2/D)
        # multiplies the features level after level (RMS x5, and a x5 spread between latents,
        # by 32x32), and the spread survives training as exploding samples. Start s near 1.
        with torch.no_grad():
            self.modulation.weight.mul_(UP_STYLE_INIT)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = x * self.modulation(w)[:, :, None, None]
        b, c4, h, width = x.shape
        x = x.view(b, c4 // 4, 4, h, width)
        return idwt(torch.cat([x[:, :, 0], x[:, :, 1:].flatten(1, 2)], 1))  # idwt's layout


class Head(nn.Module):
    """1x1 modulated conv (no demodulation) to the level's output.

    ``wavelet``: 12 Haar channels at the feature resolution (IDWT gives the image).
    ``uptorgb`` (BlazeStyleGAN): RGB at the feature resolution, bilinearly up-sampled x2.
    """

    def __init__(self, in_ch: int, style_dim: int, kind: str, fan_in: int | None = None) -> None:
        super().__init__()
        self.kind = kind
        out = WAVELET_CHANNELS if kind == "wavelet" else 3
        self.modulation = EqualLinear(style_dim, in_ch, bias_init=1.0)
        # Small: the first steps then learn the image instead of undoing an output ~25x
        # too large (the features reach it with an RMS of several units).
        self.weight = nn.Parameter(torch.randn(out, in_ch, 1, 1) * HEAD_INIT)
        self.bias = nn.Parameter(torch.zeros(out))
        self.scale = 1.0 / math.sqrt(fan_in or in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = x * (self.scale * self.modulation(w))[:, :, None, None]
        return F.conv2d(x, self.weight, self.bias)

    def to_image(self, out: torch.Tensor) -> torch.Tensor:
        if self.kind == "wavelet":
            return idwt(out)
        return F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)


class Level(nn.Module):
    """One student level: IDWT up-sampling, two styled DW-separable convs, a head.

    ``w``: channels in (before the IDWT), after conv1, after conv2; ``f``: the full network's.
    """

    def __init__(self, w: tuple[int, int, int], f: tuple[int, int, int], cfg: StudentConfig) -> None:
        super().__init__()
        d = cfg.style_dim
        self.up = IDWTUpsample(w[0], d)
        self.conv1 = StyledConv(w[0] // 4, w[1], d, cfg.demodulation, f[0] // 4)
        self.conv2 = StyledConv(w[1], w[2], d, cfg.demodulation, f[1])
        self.head = Head(w[2], d, cfg.head, f[2])

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise: tuple[torch.Tensor, torch.Tensor]
    ) -> torch.Tensor:
        """w: [B, 3, D], the teacher's W+ entries of this block (up/conv1, conv2, head)."""
        x = self.up(x, w[:, 0])
        x = self.conv1(x, w[:, 0], noise[0])
        return self.conv2(x, w[:, 1], noise[1])


class StudentOutput(NamedTuple):
    image: torch.Tensor  # [B, 3, R, R]
    heads: list[torch.Tensor]  # every level's head output, coarse to fine (last = image's)
    images: list[torch.Tensor]  # every level's image (8, 16, ..., R), for pyramid losses


class MobileSynthesis(nn.Module):
    """Student synthesis network: teacher W+ and noise in, image out."""

    def __init__(self, cfg: StudentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        # w: the channels each layer runs; f: the full network's (fan-ins of the scales).
        w, f, d = cfg.layer_widths, cfg.full_widths, cfg.style_dim
        self.input = ConstantInput(w[0])
        self.conv1 = StyledConv(w[0], w[1], d, cfg.demodulation, f[0],
                                dense=cfg.input_layer == "dense")
        self.head1 = Head(w[1], d, cfg.head, f[1])
        self.levels = nn.ModuleList(
            Level((w[i - 1], w[i], w[i + 1]), (f[i - 1], f[i], f[i + 1]), cfg)
            for i in range(2, len(w), 2)
        )

    def _features(self, wplus: torch.Tensor, noise: list[torch.Tensor]):
        """Yield (features, head, w of the head) per level, coarse to fine."""
        cfg = self.cfg
        if wplus.ndim != 3 or wplus.shape[1] < cfg.n_latent_used or wplus.shape[2] != cfg.style_dim:
            raise ValueError(
                f"wplus must be [B, >={cfg.n_latent_used}, {cfg.style_dim}], got {list(wplus.shape)}"
            )
        if len(noise) < cfg.num_noise:
            raise ValueError(f"expected >= {cfg.num_noise} noise tensors, got {len(noise)}")
        x = self.conv1(self.input(wplus.shape[0]), wplus[:, 0], noise[0])
        yield x, self.head1, wplus[:, 1]
        for b, level in enumerate(self.levels):
            i = 2 * b + 1  # the teacher's W+/noise index of this resolution's first conv
            x = level(x, wplus[:, i : i + 2], (noise[i], noise[i + 1]))
            yield x, level.head, wplus[:, i + 2]

    def forward(self, wplus: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """Inference: only the last head runs (with skips: every head)."""
        if self.cfg.skip:
            return self.forward_all(wplus, noise).image
        *_, (x, head, w) = self._features(wplus, noise)  # every level runs; one head does
        return head.to_image(head(x, w))

    def forward_all(self, wplus: torch.Tensor, noise: list[torch.Tensor]) -> StudentOutput:
        """Training: every level's head (auxiliary heads give deep supervision). With
        skips a level's image is the sum so far, and its "head" the Haar DWT of that sum,
        so the wavelet losses see what the image is."""
        heads = [head(x, w) for x, head, w in self._features(wplus, noise)]
        all_heads = [self.head1, *(level.head for level in self.levels)]
        images = [h.to_image(o) for h, o in zip(all_heads, heads, strict=True)]
        if self.cfg.skip:
            images = list(itertools.accumulate(images, lambda before, own: own + up2(before)))
            heads = [dwt(image) for image in images]
        return StudentOutput(images[-1], heads, images)


def up2(image: torch.Tensor) -> torch.Tensor:
    """The skips' x2 up-sampling (bilinear; StyleGAN2's is a 4-tap FIR filter)."""
    return F.interpolate(image, scale_factor=2, mode="bilinear", align_corners=False)


@torch.no_grad()
def calibrate_demodulation(student: MobileSynthesis,
                           chunks: Iterable[tuple[torch.Tensor, list[torch.Tensor]]]) -> None:
    """Data-dependent init of every fused demodulation: style_inv = RMS over all samples of
    the styles s that conv really receives, so fused starts out as exact demodulation on
    average (at init 1 the mismatch compounds layer after layer into huge activations).
    ``chunks`` yields (W+, noise) batches: s depends on w alone, so the mean of s^2 is
    accumulated chunk by chunk and any number of samples fits in memory."""
    convs = [m for m in student.modules()
             if isinstance(m, ModulatedConv) and m.demodulation == "fused"]
    sums: dict[ModulatedConv, torch.Tensor] = {}
    count = 0

    def accumulate(module: ModulatedConv, args) -> None:
        s2 = module.modulation(args[1]).double().pow(2).sum(0)
        sums[module] = sums[module] + s2 if module in sums else s2

    hooks = [m.register_forward_pre_hook(accumulate) for m in convs]
    try:
        for wplus, noise in chunks:
            student(wplus, noise)
            count += len(wplus)
    finally:
        for h in hooks:
            h.remove()
    if not count:
        raise ValueError("calibrate_demodulation needs at least one sample")
    for m in convs:
        m.style_inv.copy_((sums[m] / count).sqrt())


def fold_demodulation(student: MobileSynthesis) -> MobileSynthesis:
    """A copy of ``student`` with every fused demodulation folded into its output weights
    (pointwise, or the dense 4x4 kernel); its config says ``demodulation="folded"``, so
    it saves and reloads as what it is. Same images, fewer ops: the per-call sigma
    computation disappears. Exact and already folded students are copied unchanged.
    """
    folded = copy.deepcopy(student)
    for module in folded.modules():
        if isinstance(module, ModulatedConv) and module.demodulation == "fused":
            module.fold_()
    if folded.cfg.demodulation == "fused":
        folded.cfg = folded.cfg.model_copy(update={"demodulation": "folded"})
    return folded


@torch.no_grad()
def init_from_teacher(student: MobileSynthesis, teacher) -> None:
    """Start the student's 4x4 stage as the teacher's: the constant, the dense conv1
    (weight, modulation, noise strength, bias) and head1 from to_rgb1. Both networks
    then compute the same 4x4 features, so the first steps refine instead of rediscover
    them. head1 is the teacher's RGB at 4x4: nearest-up-sampled to 8x8, its Haar LL band
    is 2 x RGB (a 2x2 block of equal pixels), the other bands 0; UpToRGB takes it as is.
    Demodulation is not copied: calibrate_demodulation sets the fused constants after."""
    cfg = student.cfg
    if cfg.input_layer != "dense":
        raise ValueError("init_from_teacher needs input_layer='dense' (the teacher's conv1 is dense)")
    t_conv, s_conv = teacher.conv1.conv, student.conv1.conv
    if s_conv.weight.shape != t_conv.weight.shape[1:] or student.input.input.shape != teacher.input.input.shape:
        raise ValueError(f"init_from_teacher needs the teacher's 4x4 widths: student conv1 "
                         f"{list(s_conv.weight.shape)}, teacher {list(t_conv.weight.shape[1:])}")
    student.input.input.copy_(teacher.input.input)
    s_conv.weight.copy_(t_conv.weight[0])
    s_conv.modulation.load_state_dict(t_conv.modulation.state_dict())
    student.conv1.noise.load_state_dict(teacher.conv1.noise.state_dict())
    student.conv1.activate.load_state_dict(teacher.conv1.activate.state_dict())
    head, rgb = student.head1, teacher.to_rgb1
    gain = 2.0 if head.kind == "wavelet" else 1.0
    head.modulation.load_state_dict(rgb.conv.modulation.state_dict())
    head.weight.zero_()
    head.bias.zero_()
    head.weight[:3] = gain * rgb.conv.weight[0]
    head.bias[:3] = gain * rgb.bias.view(3)
