"""StyleGAN2 residual discriminator (Karras et al., 2020, config-f "resnet" D).

FromRGB at full resolution, one residual block per resolution halving it with a
[1,3,3,1] FIR blur before each stride-2 conv, minibatch standard deviation, then a
3x3 conv and two equalized-lr linear layers. With ``cond_dim`` > 0 it is a
projection discriminator on a conditioning vector (Anycost's generator-conditioned
D receives the sampled architecture this way).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PipelineError
from .ops import make_fir_kernel, upfirdn2d
from .stylegan2 import BLUR_TAPS, EqualLinear, FusedLeakyReLU, config_f_channels, resolutions


class EqualConv2d(nn.Module):
    """Conv with equalized learning rate; ``down`` blurs then strides by 2."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, down: bool = False,
                 bias: bool = True, activate: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_ch * kernel_size**2)
        self.down = down
        if down:
            p = (len(BLUR_TAPS) - 2) + (kernel_size - 1)
            self.blur_pad = ((p + 1) // 2, p // 2)
            self.register_buffer("kernel", make_fir_kernel(BLUR_TAPS), persistent=False)
        self.padding = 0 if down else kernel_size // 2
        self.act = FusedLeakyReLU(out_ch) if activate else None
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias and not activate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = upfirdn2d(x, self.kernel, pad=self.blur_pad)
        x = F.conv2d(x, self.weight * self.scale, self.bias, stride=2 if self.down else 1,
                     padding=self.padding)
        return self.act(x) if self.act is not None else x


class ResBlock(nn.Module):
    """Two 3x3 convs (the second halving the size) plus a 1x1 down-sampled skip, /sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_ch, in_ch, 3)
        self.conv2 = EqualConv2d(in_ch, out_ch, 3, down=True)
        self.skip = EqualConv2d(in_ch, out_ch, 1, down=True, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / math.sqrt(2)


class Discriminator(nn.Module):
    """Logits [B] for images [B, 3, R, R]; ``channels`` maps resolution -> width (config-f's
    table with ``channel_multiplier``/``channel_max`` when not given)."""

    def __init__(self, resolution: int, channels: dict[int, int] | None = None,
                 channel_multiplier: int = 2, channel_max: int = 512, cond_dim: int = 0,
                 stddev_group: int = 4) -> None:
        super().__init__()
        if resolution < 8 or resolution & (resolution - 1):
            raise PipelineError(f"discriminator resolution must be a power of two >= 8, "
                                f"got {resolution}")
        ch = channels or config_f_channels(resolution, channel_multiplier, channel_max)
        missing = [r for r in resolutions(resolution) if r not in ch]
        if missing:
            raise PipelineError(f"discriminator channels: no width for resolutions {missing}")
        if cond_dim < 0:
            raise PipelineError(f"discriminator cond_dim must be >= 0, got {cond_dim}")
        self.resolution, self.cond_dim = resolution, cond_dim
        self.from_rgb = EqualConv2d(3, ch[resolution], 1)
        self.blocks = nn.Sequential(*[ResBlock(ch[r], ch[r // 2])
                                      for r in reversed(resolutions(resolution)[1:])])
        self.stddev_group = stddev_group
        self.final_conv = EqualConv2d(ch[4] + 1, ch[4], 3)
        self.final_linear = EqualLinear(ch[4] * 16, ch[4], activate=True)
        self.out = EqualLinear(ch[4], 1)
        self.embed = EqualLinear(cond_dim, ch[4]) if cond_dim else None

    def minibatch_stddev(self, x: torch.Tensor) -> torch.Tensor:
        """Append the mean std over groups of samples: lets D see a lack of variety."""
        b, c, h, w = x.shape
        g = min(self.stddev_group, b)
        while b % g:
            g -= 1
        y = x.reshape(g, -1, c, h, w)
        y = (y.var(0, unbiased=False) + 1e-8).sqrt().mean([1, 2, 3])  # [B/g]
        y = y.view(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], 1)

    def forward(self, images: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, 3, R, R] (and conditioning [B, cond_dim]) -> logits [B]."""
        if images.shape[-2:] != (self.resolution, self.resolution):
            raise ValueError(f"expected images of {self.resolution}x{self.resolution}, "
                             f"got {list(images.shape)}")
        x = self.blocks(self.from_rgb(images))
        x = self.final_conv(self.minibatch_stddev(x))
        h = self.final_linear(x.flatten(1))
        out = self.out(h).flatten()
        if self.embed is not None:
            if c is None or c.shape != (len(images), self.cond_dim):
                raise ValueError(f"conditional discriminator: expected c of shape "
                                 f"[{len(images)}, {self.cond_dim}], got "
                                 f"{None if c is None else list(c.shape)}")
            out = out + (self.embed(c) * h).sum(1) / math.sqrt(h.shape[1])
        elif c is not None:
            raise ValueError("this discriminator is unconditional (cond_dim=0): c must be None")
        return out
