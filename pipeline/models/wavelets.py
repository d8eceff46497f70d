"""Orthonormal Haar wavelet transform (DWT) and its inverse, as reshapes and sums.

For each 2x2 block [[a, b], [c, d]] of a channel:

    LL = (a + b + c + d) / 2      LH = (a + b - c - d) / 2
    HL = (a - b + c - d) / 2      HH = (a - b - c + d) / 2

and the inverse is the same matrix (it is symmetric and orthonormal). The IDWT
needs only sums, differences and the fixed 1/2 scale: no convolutions, which is
why MobileStyleGAN uses it to up-sample.

Channel layout (MobileStyleGAN's): ``[LL of every channel, then (LH, HL, HH) of
channel 0, of channel 1, ...]``, so an RGB image becomes 12 channels at half size.
"""

from __future__ import annotations

import torch


def dwt(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 4C, H/2, W/2] (H, W even)."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"dwt needs even height and width, got {h}x{w}")
    x = x.reshape(b, c, h // 2, 2, w // 2, 2)
    a, bb = x[:, :, :, 0, :, 0], x[:, :, :, 0, :, 1]
    cc, d = x[:, :, :, 1, :, 0], x[:, :, :, 1, :, 1]
    ll = (a + bb + cc + d) * 0.5
    lh = (a + bb - cc - d) * 0.5
    hl = (a - bb + cc - d) * 0.5
    hh = (a - bb - cc + d) * 0.5
    high = torch.stack([lh, hl, hh], dim=2).reshape(b, 3 * c, h // 2, w // 2)
    return torch.cat([ll, high], dim=1)


def idwt(x: torch.Tensor) -> torch.Tensor:
    """[B, 4C, H, W] -> [B, C, 2H, 2W], the exact inverse of :func:`dwt`."""
    b, c4, h, w = x.shape
    if c4 % 4:
        raise ValueError(f"idwt needs a multiple of 4 channels, got {c4}")
    c = c4 // 4
    ll = x[:, :c]
    high = x[:, c:].reshape(b, c, 3, h, w)
    lh, hl, hh = high[:, :, 0], high[:, :, 1], high[:, :, 2]
    s, t = ll + lh, hl + hh  # shared partial sums: 8 adds for 4 outputs
    u, v = ll - lh, hl - hh
    a, bb = (s + t) * 0.5, (s - t) * 0.5
    cc, d = (u + v) * 0.5, (u - v) * 0.5
    top = torch.stack([a, bb], dim=-1)  # [B, C, H, W, 2]
    bottom = torch.stack([cc, d], dim=-1)
    return torch.stack([top, bottom], dim=3).reshape(b, c, 2 * h, 2 * w)
