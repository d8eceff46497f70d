"""Low-level ops shared by the generators, in plain PyTorch (no custom kernels).

Plain ops keep every model exportable (ONNX, ExecuTorch, Core ML) and runnable on
CPU; they match the reference CUDA kernels of StyleGAN2 numerically.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LRELU_GAIN = math.sqrt(2.0)  # keeps activation variance after leaky ReLU(0.2)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, slope: float = 0.2) -> torch.Tensor:
    """leaky_relu(x + b) * sqrt(2), the bias broadcast over channel dim 1."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), slope) * LRELU_GAIN


def make_fir_kernel(taps: list[float] | tuple[float, ...]) -> torch.Tensor:
    """Separable 2-D FIR kernel from 1-D taps, normalised to sum 1 ([1,3,3,1] -> binomial 4x4)."""
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[None, :] * k[:, None]
    return k / k.sum()


def upfirdn2d(
    x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with ``kernel`` (true convolution), downsample.

    ``pad`` is (before, after), the same on both axes; negative values crop.
    """
    b, c, h, w = x.shape
    if up > 1:
        x = x.reshape(b, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(b, c, h * up, w * up)
    p0, p1 = pad
    x = F.pad(x, [max(p0, 0), max(p1, 0), max(p0, 0), max(p1, 0)])
    x = x[:, :, max(-p0, 0) : x.shape[2] - max(-p1, 0), max(-p0, 0) : x.shape[3] - max(-p1, 0)]
    # conv2d correlates: flip the kernel to convolve.
    k = torch.flip(kernel, [0, 1]).to(x.dtype)
    k = k.view(1, 1, *k.shape).expand(c, 1, *k.shape)
    x = F.conv2d(x, k, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x
