"""Sample grids: images a reviewer can look at, from fixed seeds."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from .models.stylegan2 import Generator


@torch.no_grad()
def teacher_samples(
    generator: Generator, count: int, seed: int, truncation_psi: float, batch: int = 8
) -> torch.Tensor:
    """``count`` images from z drawn with ``seed``, constant noise: the same every run."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(count, generator.cfg.style_dim, generator=g)
    images = [
        generator(chunk, truncation_psi=truncation_psi, noise_mode="const").image
        for chunk in z.split(batch)
    ]
    return torch.cat(images)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int) -> None:
    """Save images in [-1, 1] as one PNG grid."""
    grid = make_grid(((images.float() + 1) / 2).clamp(0, 1), nrow=nrow, padding=2, pad_value=1.0)
    save_image(grid, str(path))
