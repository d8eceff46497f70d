"""The teacher's inference graph: what the benchmark times for a teacher.

:class:`TeacherGraph` is ``Generator.synthesis`` with its ``noise_mode="const"`` maps baked
in, written with constant weights (modulation on the activations, demodulation energies
precomputed; the same image to float rounding): the training module folds the batch into
grouped convolutions with per-sample weights, which the TorchScript ONNX exporter rejects
and XNNPACK does not delegate. It has :class:`~pipeline.export.graph.ExportModel`'s
interface, so :mod:`pipeline.export.formats` writes it like a student's graph
(:mod:`pipeline.export.graph`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.ops import fused_leaky_relu
from ..models.stylegan2 import Generator, ModulatedConv2d, StyledConv, ToRGB


def _const(t: torch.Tensor) -> nn.Parameter:
    """A frozen constant of a graph (folded in float64, stored in float32)."""
    return nn.Parameter(t.detach().double().float().clone(), requires_grad=False)


def _fir(kernel: torch.Tensor, channels: int) -> nn.Parameter:
    """A 2-D FIR kernel as a constant depthwise conv weight [C, 1, k, k], flipped (conv2d
    correlates; upfirdn2d convolves)."""
    k = torch.flip(kernel.detach().cpu().double(), [0, 1])
    return _const(k[None, None].repeat(channels, 1, 1, 1))


class _ModConv(nn.Module):
    """The teacher's modulated conv in NVIDIA's ``fused_modconv=False`` form, exactly equal
    to its weight-modulating form: s is per input channel and 1/sigma per output channel, so
    conv(x, scale W s / sigma) = conv(x * s, scale W) / sigma(s), with
    sigma_j(s) = sqrt(sum_i s_i^2 E_ji + 1e-8), E_ji = sum_k (scale W_jik)^2 precomputed.
    The weight is then a constant: no per-sample weights, no batch folded into the groups."""

    def __init__(self, conv: ModulatedConv2d) -> None:
        super().__init__()
        lin = conv.modulation
        self.affine_weight = _const(lin.weight.double() * lin.scale)
        self.affine_bias = _const(lin.bias.double() * lin.lr_mul)
        weight = conv.weight[0].double() * conv.scale  # [out, in, k, k]
        self.upsample, self.padding = conv.upsample, conv.kernel_size // 2
        # conv_transpose2d reads [in, out, k, k]
        self.weight = _const(weight.transpose(0, 1) if conv.upsample else weight)
        self.energy = _const(weight.pow(2).sum([2, 3])) if conv.demodulate else None
        if conv.upsample:  # the [1,3,3,1] FIR after the stride-2 transposed conv (2H+1 -> 2H)
            if conv.blur.pad != (1, 1):
                raise ValueError(f"unexpected blur padding {conv.blur.pad}")
            self.blur = _fir(conv.blur.kernel, weight.shape[0])

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = F.linear(w, self.affine_weight, self.affine_bias).flatten(1)  # [B, in]
        x = x * s[:, :, None, None]
        if self.upsample:
            x = F.conv_transpose2d(x, self.weight, stride=2)
            x = F.conv2d(x, self.blur, padding=1, groups=self.blur.shape[0])
        else:
            x = F.conv2d(x, self.weight, padding=self.padding)
        if self.energy is not None:
            x = x * torch.rsqrt(F.linear(s.pow(2), self.energy) + 1e-8)[:, :, None, None]
        return x


class _StyledConv(nn.Module):
    """Modulated conv -> + strength x fixed noise (one constant) -> bias, leaky ReLU x sqrt(2)."""

    def __init__(self, layer: StyledConv, index: int, noise: torch.Tensor) -> None:
        super().__init__()
        self.index, self.conv = index, _ModConv(layer.conv)
        self.noise = _const(float(layer.noise.weight) * noise.double())
        self.bias = _const(layer.activate.bias.double())
        self.clamp = layer.activate.clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = fused_leaky_relu(self.conv(x, w) + self.noise, self.bias)
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


class _ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + bias, plus the FIR-up-sampled skip."""

    def __init__(self, layer: ToRGB, index: int) -> None:
        super().__init__()
        self.index, self.conv = index, _ModConv(layer.conv)
        self.bias = _const(layer.bias.double())
        self.clamp = layer.clamp
        # upfirdn2d(x, k, up=2, pad=(2, 1)) is a stride-2 transposed conv with padding 1
        # (the symmetric FIR kernel needs no flip): H -> 2H, one constant depthwise kernel.
        self.upsample = _fir(layer.upsample.kernel, 3) if hasattr(layer, "upsample") else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is None:
            return out
        return out + F.conv_transpose2d(skip, self.upsample, stride=2, padding=1, groups=3)


class TeacherGraph(nn.Module):
    """The teacher's synthesis network as an inference graph: W+ [B, n_latent, D] -> image,
    its fixed noise maps (``noise_mode="const"``) baked in, equalized-lr scales folded,
    demodulation energies precomputed (see :class:`_ModConv`). Computes
    ``Generator.synthesis(wplus, make_noise(1, "const"))`` (checked to float rounding) with
    constant weights, which the TorchScript ONNX exporter and XNNPACK need: the training
    module's per-sample weights fold the batch into conv groups.

    Has :class:`~pipeline.export.graph.ExportModel`'s interface (``kind``, ``input_shape``,
    ``resolution``), so ``export_onnx`` / ``export_pte`` write it."""

    kind = "wplus"

    @torch.no_grad()
    def __init__(self, generator: Generator) -> None:
        super().__init__()
        g = generator
        self.cfg = g.cfg
        self.n_latent, self.style_dim = g.cfg.n_latent, g.cfg.style_dim
        noise = [n.cpu() for n in g.make_noise(1, "const")]
        self.const = _const(g.input.input)
        self.convs = nn.ModuleList([_StyledConv(g.conv1, 0, noise[0])] + [
            _StyledConv(c, j + 1, noise[j + 1]) for j, c in enumerate(g.convs)])
        self.to_rgbs = nn.ModuleList([_ToRGB(g.to_rgb1, 1)] + [
            _ToRGB(t, 2 * b + 3) for b, t in enumerate(g.to_rgbs)])

    def forward(self, wplus: torch.Tensor) -> torch.Tensor:
        ws = [wplus[:, i : i + 1] for i in range(self.n_latent)]  # slices: XNNPACK runs them
        x = self.convs[0](self.const.expand(wplus.shape[0], -1, -1, -1), ws[0])
        skip = self.to_rgbs[0](x, ws[1], None)
        for b, to_rgb in enumerate(self.to_rgbs[1:]):
            for conv in self.convs[2 * b + 1 : 2 * b + 3]:
                x = conv(x, ws[conv.index])
            skip = to_rgb(x, ws[to_rgb.index], skip)
        return skip

    def input_shape(self, batch: int = 1) -> list[int]:
        return [batch, self.n_latent, self.style_dim]

    @property
    def resolution(self) -> int:
        return self.cfg.resolution

