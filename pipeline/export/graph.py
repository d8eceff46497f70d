"""Inference graphs of a student: what is exported (MobileStyleGAN's deployment form).

:func:`build` turns a trained :class:`~pipeline.models.mobile.MobileSynthesis` (full
or a :func:`~pipeline.models.elastic.subnet`) into an :class:`ExportModel` that
computes the same image with fewer operations:

* Demodulation: fused demodulation is folded into the pointwise (or dense 4x4) weights
  (:func:`~pipeline.models.mobile.fold_demodulation`); exact demodulation keeps its
  per-style sigma, with its style-independent energy matrix precomputed.
* Heads: only the last one. The auxiliary heads are not copied: their weights are
  not in the graph at all. With skips (``StudentConfig.skip``) every head draws, and
  the image is each head's output plus the bilinear x2 of the image before.
* Style-independent constants precomputed: the equalized-lr scales are multiplied
  into the weights; with a separable 4x4 layer the constant input goes through its
  depthwise conv once (depthwise convs commute with per-channel modulation:
  dw(c * s) = s * dw(c); a dense 4x4 conv mixes channels, so it runs as is); each
  layer's bias moves into its pointwise conv; the leaky ReLU's sqrt(2) gain moves into
  the next modulation; the last head's IDWT (a fixed mix of the
  12 wavelet channels followed by a pixel shuffle) and the output range mapping are
  multiplied into the head's 1x1 conv.
* IDWT up-sampling inside the network: a fixed grouped 1x1 conv (the 4x4 Haar
  matrix per channel) and a pixel shuffle, which XNNPACK, ONNX Runtime and Core ML
  run as single ops (no reshapes or slices). The level's first conv is modulated
  there too: its style s1 scales output channel c of the IDWT, which only band
  channels 4c..4c+3 make, so s1 joins the up-sampling's own style on the small
  input (s_up[4c + b] * s1[c]) instead of taking a full-resolution pass of its own.
  Each runtime's file takes the form of the Haar mix and shuffle that runtime runs
  fastest (:func:`for_runtime`; the same image): ONNX Runtime one grouped
  ConvTranspose (kernel 2, stride 2: mix and shuffle in one op), XNNPACK a grouped 1x1
  conv over 4 channels' bands at a time (a block-diagonal 16 x 16 kernel: its grouped
  GEMM is slow on 4-channel groups), others the 4-channel groups.
* Noise: baked in. Each layer adds strength x the teacher's fixed noise map
  (``Generator.make_noise(1, "const")``, the teacher's ``noise_mode="const"``), one
  [1, 1, r, r] constant, so an input always gives the same image.

Inputs (``kind``):

* ``wplus``: ``wplus`` [B, n_latent, style_dim], the teacher's W+ layout (entries the
  student does not read, the teacher's last block's, are accepted and ignored);
* ``w``: ``w`` [B, style_dim], one style for every layer;
* ``z``: ``z`` [B, style_dim], through the teacher's mapping network and truncation
  towards its ``w_avg`` with a fixed psi (both bundled in the graph).

Output: ``image`` [B, 3, R, R], RGB, NCHW, clamped to ``output_range`` ((0, 1):
(x + 1) / 2 of the student's roughly [-1, 1] image; (-1, 1): the student's image).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..models.mobile import (
    Head,
    IDWTUpsample,
    MobileSynthesis,
    ModulatedDenseConv2d,
    fold_demodulation,
    up2,
)
from ..models.mobile import StyledConv as TrainingStyledConv
from ..models.stylegan2 import EqualLinear, Generator, PixelNorm
from ..models.wavelets import idwt

InputKind = Literal["wplus", "w", "z"]
UpsampleForm = Literal["shuffle", "blocks", "deconv"]
# The IDWT up-sampling's form per runtime (for_runtime); any other runtime: "shuffle".
# Measured at 1024, 1 thread (README "Benchmark"): XNNPACK 224 -> 192 ms with "blocks"
# (ORT 188 -> 212: slower), ONNX Runtime 200 -> 191 ms with "deconv" (XNNPACK: 2.4x slower).
RUNTIME_FORMS: dict[str, UpsampleForm] = {"onnxruntime": "deconv", "xnnpack": "blocks"}
BLOCK = 4  # output channels per group of the "blocks" form
INPUT_KINDS: tuple[InputKind, ...] = ("wplus", "w", "z")
SLOPE, GAIN = 0.2, math.sqrt(2.0)  # the leaky ReLU of FusedLeakyReLU


def _const(t: torch.Tensor) -> nn.Parameter:
    """A frozen constant of the graph (folded in float64, stored in float32)."""
    return nn.Parameter(t.detach().float().clone(), requires_grad=False)


def _affine(lin: EqualLinear, gain: float) -> tuple[nn.Parameter, nn.Parameter]:
    """The style affine s = gain * lin(w) with its equalized-lr scales folded in."""
    return (_const(lin.weight.double() * (lin.scale * gain)),
            _const(lin.bias.double() * (lin.lr_mul * gain)))


def _pixel_shuffle_mix(to_image, channels: int) -> torch.Tensor:
    """The fixed linear map [out, in] from ``channels`` wavelet channels to the pixel
    shuffle's input: ``to_image`` applied to every basis vector, read back unshuffled."""
    basis = torch.eye(channels, dtype=torch.float64).view(channels, channels, 1, 1)
    return F.pixel_unshuffle(to_image(basis), 2).flatten(1).t()


def _style(w: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """s [B, C] from w [B, D] or a W+ slice [B, 1, D]."""
    return F.linear(w, weight, bias).flatten(1)


class StyledConv(nn.Module):
    """x * s -> 3x3 depthwise -> 1x1 pointwise (or one dense 3x3 conv) + bias [-> exact
    demodulation] -> + noise -> leaky ReLU. The output lacks the sqrt(2) gain: the
    consumer's modulation has it."""

    def __init__(self, layer: TrainingStyledConv, index: int, noise: torch.Tensor, gain_in: float,
                 const_input: torch.Tensor | None = None) -> None:
        super().__init__()
        self.modulated = True  # False: the input comes modulated (Upsample.absorb)
        conv = copy.deepcopy(layer.conv).double()  # every constant below folded in float64
        if conv.demodulation == "fused":
            raise ValueError("fold the fused demodulation first (fold_demodulation)")
        self.index = index  # the W+ entry this layer reads
        self.affine_weight, self.affine_bias = _affine(conv.modulation, conv.scale * gain_in)
        self.channels, self.padding = conv.in_ch, conv.padding
        dense = isinstance(conv, ModulatedDenseConv2d)
        # Depthwise convs need no run time on the constant input: dw(c * s) = s * dw(c).
        if const_input is not None and not dense:
            const_input = F.conv2d(const_input.double(), conv.weight_dw, padding=conv.padding,
                                   groups=conv.in_ch)
        self.const = None if const_input is None else _const(const_input)
        self.weight_dw = None if dense or const_input is not None else _const(conv.weight_dw)
        self.weight = _const(conv.weight if dense else conv.weight_pw)  # the mixing kernel
        self.kernel_padding = conv.padding if dense else 0
        self.exact = conv.demodulation == "exact"
        if self.exact:  # for s' = scale * gain_in * s
            self.energy = _const(conv.energy() / gain_in**2)
        self.bias = _const(layer.activate.bias.double())
        strength = float(layer.noise.weight)
        self.noise = None if strength == 0 else _const(strength * noise.double())

    def forward(self, x: torch.Tensor | None, w: torch.Tensor) -> torch.Tensor:
        s = _style(w, self.affine_weight, self.affine_bias) if self.modulated or self.exact else None
        x = self.const if x is None else x
        if self.modulated:
            x = x * s[:, :, None, None]
        if self.weight_dw is not None:
            x = F.conv2d(x, self.weight_dw, padding=self.padding, groups=self.channels)
        if self.exact:
            x = F.conv2d(x, self.weight, padding=self.kernel_padding)
            x = x * torch.rsqrt(s.pow(2) @ self.energy.t() + 1e-8)[:, :, None, None]
            x = x + self.bias[None, :, None, None]
        else:
            x = F.conv2d(x, self.weight, self.bias, padding=self.kernel_padding)
        if self.noise is not None:
            x = x + self.noise
        return F.leaky_relu(x, SLOPE)


class Upsample(nn.Module):
    """IDWT up-sampling: x * s, the Haar matrix as a grouped 1x1 conv, pixel shuffle
    (with the next conv's style s1 in s once :meth:`absorb` has run). :meth:`set_form`
    writes the mix and shuffle another way (same image)."""

    def __init__(self, up: IDWTUpsample, index: int, gain_in: float) -> None:
        super().__init__()
        self.index = index
        self.affine_weight, self.affine_bias = _affine(up.modulation, gain_in)
        self.groups = up.modulation.weight.shape[0] // 4
        self.next_weight = self.next_bias = None

        def band_idwt(x: torch.Tensor) -> torch.Tensor:  # the module itself, unmodulated
            b, c4, h, w = x.shape
            x = x.view(b, c4 // 4, 4, h, w)
            return idwt(torch.cat([x[:, :, 0], x[:, :, 1:].flatten(1, 2)], 1))

        self.haar = _pixel_shuffle_mix(band_idwt, 4).float()  # [4 pixels, 4 bands]: not a parameter
        self.set_form("shuffle")

    def set_form(self, form: UpsampleForm) -> None:
        """``shuffle``: grouped 1x1 conv (4 bands -> 4 pixels per channel), pixel shuffle;
        ``blocks``: the same with BLOCK channels per group (a block-diagonal kernel);
        ``deconv``: one grouped ConvTranspose, kernel 2, stride 2 (pixel (i, j) of channel
        c from its bands: weight[4c + b, 0, i, j] = haar[2i + j, b])."""
        c, mix = self.groups, self.haar
        if form == "deconv":
            kernel, groups = mix.t().reshape(1, 4, 1, 2, 2).expand(c, -1, -1, -1, -1), c
        elif form in ("blocks", "shuffle"):
            k = next(k for k in (BLOCK, 2, 1) if c % k == 0) if form == "blocks" else 1
            kernel = torch.zeros(c // k, k, 4, k, 4)
            for j in range(k):
                kernel[:, j, :, j, :] = mix
            groups = c // k
        else:
            raise ValueError(f"up-sampling form must be shuffle, blocks or deconv, got {form!r}")
        self.form, self.mix_groups = form, groups
        self.mix = _const(kernel.reshape(4 * c, -1, *kernel.shape[-2:]) if form == "deconv"
                          else kernel.reshape(4 * c, 4 * (c // groups), 1, 1))

    def absorb(self, conv: StyledConv) -> None:
        """Modulate ``conv``'s input here: the IDWT maps band channels 4c..4c+3 to output
        channel c alone, so s1[c] may scale those bands instead of the 4x larger output.
        ``conv`` reads the same W+ entry; it keeps its affine for exact demodulation."""
        if conv.index != self.index or conv.channels != self.groups or conv.weight_dw is None:
            raise ValueError("absorb takes the level's first conv, right after this up-sampling")
        self.next_weight, self.next_bias = conv.affine_weight, conv.affine_bias
        conv.modulated = False

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = _style(w, self.affine_weight, self.affine_bias)
        if self.next_weight is not None:  # a broadcast multiply: XNNPACK runs it, unlike an expand
            s1 = _style(w, self.next_weight, self.next_bias)
            s = (s.view(-1, self.groups, 4) * s1.view(-1, self.groups, 1)).flatten(1)
        x = x * s[:, :, None, None]
        if self.form == "deconv":
            return F.conv_transpose2d(x, self.mix, stride=2, groups=self.mix_groups)
        return F.pixel_shuffle(F.conv2d(x, self.mix, groups=self.mix_groups), 2)


def for_runtime(model: nn.Module, runtime: str) -> nn.Module:
    """``model`` with its IDWT up-samplings in ``runtime``'s form (RUNTIME_FORMS): a copy,
    or ``model`` itself when nothing changes (a teacher, a layer without up-sampling)."""
    form = RUNTIME_FORMS.get(runtime, "shuffle")
    if all(m.form == form for m in model.modules() if isinstance(m, Upsample)):
        return model
    model = copy.deepcopy(model)
    for m in model.modules():
        if isinstance(m, Upsample):
            m.set_form(form)
    return model


class OutputHead(nn.Module):
    """A head that draws: x * s -> 1x1 conv (IDWT mix and alpha x + beta folded in) ->
    pixel shuffle (wavelet) or bilinear x2 (UpToRGB)."""

    def __init__(self, head: Head, index: int, gain_in: float, alpha: float, beta: float) -> None:
        super().__init__()
        self.index = index
        self.kind = head.kind
        self.affine_weight, self.affine_bias = _affine(head.modulation, head.scale * gain_in)
        weight, bias = head.weight.double().flatten(1), head.bias.double()
        if head.kind == "wavelet":
            mix = _pixel_shuffle_mix(head.to_image, weight.shape[0])
            weight, bias = mix @ weight, mix @ bias
        # IDWT-then-shuffle and bilinear interpolation map a constant image to itself,
        # so beta adds per pixel.
        self.weight = _const((alpha * weight)[:, :, None, None])
        self.bias = _const(alpha * bias + beta)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = x * _style(w, self.affine_weight, self.affine_bias)[:, :, None, None]
        x = F.conv2d(x, self.weight, self.bias)
        if self.kind == "wavelet":
            return F.pixel_shuffle(x, 2)
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class Synthesis(nn.Module):
    """The student's inference network: per-W+-entry styles in, image out."""

    def __init__(self, student: MobileSynthesis, noise: Sequence[torch.Tensor],
                 output_range: tuple[float, float]) -> None:
        super().__init__()
        student = fold_demodulation(student) if student.cfg.demodulation == "fused" else student
        self.cfg = student.cfg
        layers: list[nn.Module] = [StyledConv(student.conv1, 0, noise[0], 1.0,
                                              const_input=student.input.input)]
        heads = [student.head1]
        for b, level in enumerate(student.levels):
            i = 2 * b + 1  # the teacher's W+/noise index of the level's first conv
            up, conv1 = Upsample(level.up, i, GAIN), StyledConv(level.conv1, i, noise[i], 1.0)
            up.absorb(conv1)
            layers += [up, conv1, StyledConv(level.conv2, i + 1, noise[i + 1], GAIN)]
            heads.append(level.head)
        self.layers = nn.ModuleList(layers)
        # Images come out in [-1, 1]; (lo, hi) = alpha * x + beta. With skips every head
        # draws and the bilinear x2 keeps a constant, so beta goes in the first one only.
        self.low, self.high = output_range
        alpha, beta = (self.high - self.low) / 2, (self.high + self.low) / 2
        drawn = range(len(heads)) if self.cfg.skip else [len(heads) - 1]
        # head k reads W+ entry 2k + 1 and follows layer 3k (conv1 at 4x4, then each conv2)
        self.heads = nn.ModuleDict({
            str(3 * k): OutputHead(heads[k], 2 * k + 1, GAIN, alpha, beta if k == drawn[0] else 0.0)
            for k in drawn})

    def forward(self, ws: Sequence[torch.Tensor]) -> torch.Tensor:
        """``ws[i]``: the w of W+ entry i, [B, style_dim] or [B, 1, style_dim]."""
        x = image = None
        for k, layer in enumerate(self.layers):
            x = layer(x, ws[layer.index])
            if str(k) in self.heads:
                head = self.heads[str(k)]
                own = head(x, ws[head.index])
                image = own if image is None else own + up2(image)
        return image.clamp(self.low, self.high)


class Mapping(nn.Module):
    """The teacher's mapping network with truncation: z -> pixel norm -> linears (scales
    folded, each leaky ReLU's gain in the next linear) -> w_avg + psi (w - w_avg)."""

    def __init__(self, teacher: Generator, truncation_psi: float) -> None:
        super().__init__()
        layers = list(teacher.style)
        if not isinstance(layers[0], PixelNorm) or not all(
                isinstance(m, EqualLinear) and m.activate for m in layers[1:]):
            raise ValueError("unexpected mapping network layout")
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for k, lin in enumerate(layers[1:]):  # the gain multiplies the input, not the bias
            self.weights.append(_const(lin.weight.double() * (lin.scale * (GAIN if k else 1.0))))
            self.biases.append(_const(lin.bias.double() * lin.lr_mul))
        psi = float(truncation_psi)
        self.out_scale = psi * GAIN
        self.out_shift = _const((1 - psi) * teacher.w_avg.double())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        for weight, bias in zip(self.weights, self.biases, strict=True):
            x = F.leaky_relu(F.linear(x, weight, bias), SLOPE)
        return x * self.out_scale + self.out_shift


class ExportModel(nn.Module):
    """One exported network: ``kind`` input (wplus, w or z) -> image."""

    def __init__(self, synthesis: Synthesis, kind: InputKind, n_latent: int,
                 mapping: Mapping | None = None) -> None:
        super().__init__()
        if kind not in INPUT_KINDS:
            raise ValueError(f"input kind must be one of {INPUT_KINDS}, got {kind!r}")
        if (kind == "z") != (mapping is not None):
            raise ValueError("the z input needs the mapping network, and only it does")
        self.synthesis, self.kind, self.n_latent, self.mapping = synthesis, kind, n_latent, mapping

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "wplus":  # slices, not unbind: XNNPACK runs them, unused ones vanish
            return self.synthesis([x[:, i : i + 1] for i in range(self.n_latent)])
        w = self.mapping(x) if self.mapping is not None else x
        return self.synthesis([w] * self.n_latent)

    def input_shape(self, batch: int = 1) -> list[int]:
        d = self.synthesis.cfg.style_dim
        return [batch, self.n_latent, d] if self.kind == "wplus" else [batch, d]

    @property
    def resolution(self) -> int:
        return self.synthesis.cfg.resolution


@torch.no_grad()
def build(student: MobileSynthesis, teacher: Generator, kind: InputKind,
          output_range: tuple[float, float] = (0.0, 1.0), truncation_psi: float = 1.0) -> ExportModel:
    """The exported network of ``student`` for input ``kind`` (see the module docstring).

    ``teacher`` gives the W+ layout, the fixed noise and, for ``z``, the mapping network
    and ``w_avg``; nothing else of it is used.
    """
    cfg, tcfg = student.cfg, teacher.cfg
    if cfg.style_dim != tcfg.style_dim or cfg.n_latent_used > tcfg.n_latent:
        raise ValueError(f"the student (style_dim {cfg.style_dim}, {cfg.n_latent_used} W+ entries) "
                         f"does not fit the teacher (style_dim {tcfg.style_dim}, "
                         f"{tcfg.n_latent} W+ entries)")
    noise = teacher.make_noise(1, "const")
    synthesis = Synthesis(student.cpu().float().eval(), [n.cpu() for n in noise], output_range)
    mapping = Mapping(teacher.cpu().float().eval(), truncation_psi) if kind == "z" else None
    return ExportModel(synthesis, kind, tcfg.n_latent, mapping).eval()


@torch.no_grad()
def reference(student: MobileSynthesis, teacher: Generator, kind: InputKind, x: torch.Tensor,
              output_range: tuple[float, float] = (0.0, 1.0),
              truncation_psi: float = 1.0) -> torch.Tensor:
    """What an exported model must compute, from the training modules themselves: the
    student (unfolded, every head built) on the teacher's W+ layout and fixed noise."""
    if kind == "z":
        x = teacher.truncate(teacher.mapping(x), truncation_psi)
    wplus = x if kind == "wplus" else x[:, None].expand(-1, teacher.cfg.n_latent, -1)
    image = student(wplus, teacher.make_noise(1, "const"))
    low, high = output_range
    return (image * (high - low) / 2 + (high + low) / 2).clamp(low, high)
