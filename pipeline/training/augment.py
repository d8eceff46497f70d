"""DiffAugment (Zhao et al., 2020): differentiable augmentations for D's inputs.

Applied to real and fake images alike (fresh randomness per call, as in the paper),
so the discriminator cannot memorise a small real set while the generator still
gets gradients through the augmentation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _rand(x: Tensor, g: torch.Generator | None) -> Tensor:
    """One uniform number per sample, shaped [B, 1, 1, 1], drawn on the generator's device."""
    dev = g.device if g is not None else x.device
    return torch.rand((x.shape[0], 1, 1, 1), generator=g, device=dev).to(x.device, x.dtype)


def _randint(low: int, high: int, n: int, x: Tensor, g: torch.Generator | None) -> Tensor:
    dev = g.device if g is not None else x.device
    return torch.randint(low, high, (n,), generator=g, device=dev).to(x.device)


def color(x: Tensor, g: torch.Generator | None) -> Tensor:
    """Random brightness, saturation and contrast per sample."""
    x = x + (_rand(x, g) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, g) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return (x - mean) * (_rand(x, g) + 0.5) + mean


def translation(x: Tensor, g: torch.Generator | None, ratio: float = 0.125) -> Tensor:
    """Shift by up to ratio * size pixels per sample, filling with zeros."""
    b, c, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy, dx = _randint(-sh, sh + 1, b, x, g), _randint(-sw, sw + 1, b, x, g)
    # Source index per output pixel, in the 1-pixel zero-padded image (0 and size+1 are padding).
    rows = (torch.arange(h, device=x.device)[None] + dy[:, None] + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device)[None] + dx[:, None] + 1).clamp(0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    x = padded.gather(2, rows[:, None, :, None].expand(-1, c, -1, w + 2))
    return x.gather(3, cols[:, None, None, :].expand(-1, c, h, -1))


def cutout(x: Tensor, g: torch.Generator | None, ratio: float = 0.5) -> Tensor:
    """Zero a random square of side ratio * size per sample (may be cut by the border)."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _randint(0, h + 1 - ch % 2, b, x, g)
    cx = _randint(0, w + 1 - cw % 2, b, x, g)
    ys = torch.arange(h, device=x.device)[None] - (cy[:, None] - ch // 2)
    xs = torch.arange(w, device=x.device)[None] - (cx[:, None] - cw // 2)
    inside = ((ys >= 0) & (ys < ch))[:, :, None] & ((xs >= 0) & (xs < cw))[:, None, :]
    return x * (~inside)[:, None].to(x.dtype)


POLICIES: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: Tensor, policy: str = "color,translation,cutout",
                 generator: torch.Generator | None = None) -> Tensor:
    """Apply the comma-separated ``policy`` to images [B, C, H, W] ("" = identity)."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ValueError(f"unknown DiffAugment policy {unknown}; expected a comma-separated "
                         f"subset of {sorted(POLICIES)}")
    for name in names:
        x = POLICIES[name](x, generator)
    return x
