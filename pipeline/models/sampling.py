"""Teacher samples and the resizing conventions every stage shares.

A *target* is {W+, noise, teacher image} from fresh z: the student gets exactly the
teacher's styles and noise tensors, so no dataset is needed (MobileStyleGAN section 4).
Lower-resolution images meet full-resolution ones in two ways: training compares a
level with the teacher image area-downsampled to it (consistent with the Haar LL
band); every reported distance up-samples the smaller image to the full size, as it
would be shown (see pipeline.metrics.fixed_latents).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .stylegan2 import Generator, derived_seed


class Targets(NamedTuple):
    wplus: torch.Tensor
    noise: list[torch.Tensor]
    image: torch.Tensor  # the teacher's image, [B, 3, R, R]


@torch.no_grad()
def teacher_targets(
    teacher: Generator, batch: int, truncation_psi: float, mixing_prob: float,
    generator: torch.Generator, device: torch.device,
) -> Targets:
    """One batch of {W+, noise, teacher image} from fresh z."""
    d, n = teacher.cfg.style_dim, teacher.cfg.n_latent
    z = torch.randn(batch, d, generator=generator).to(device)
    z_mix, crossover = None, None
    draw = torch.rand((), generator=generator).item()
    if draw < mixing_prob:
        z_mix = torch.randn(batch, d, generator=generator).to(device)
        crossover = int(torch.randint(1, n, (), generator=generator))
    out = teacher(z, truncation_psi, z_mix, crossover, noise_mode="random", generator=generator)
    return Targets(out.wplus, out.noise, out.image)


@torch.no_grad()
def fixed_targets(
    teacher: Generator, seed: int, indices: range, truncation_psi: float, mixing_prob: float,
    device: torch.device | str,
) -> Targets:
    """Samples ``indices`` of the fixed set ``seed``. Each sample draws from its own stream
    (its z, whether it mixes styles and where, its noise), so a sample is the same in any
    chunk (chunk sizes are memory, not results) and style mixing varies sample by sample
    (one crossover per chunk would leave a set's low percentiles to a few draws)."""
    d, n = teacher.cfg.style_dim, teacher.cfg.n_latent
    z, crossovers, noises = [], [], []
    for i in indices:
        g = torch.Generator().manual_seed(derived_seed(f"fixed-latent/{i}", seed))
        z.append(torch.randn(2, d, generator=g))  # its z and its mixing z
        mixes = torch.rand((), generator=g).item() < mixing_prob
        crossover = int(torch.randint(1, n, (), generator=g))
        crossovers.append(crossover if mixes else n)
        noises.append(teacher.make_noise(1, "random", generator=g))
    w = teacher.truncate(teacher.mapping(torch.cat(z).to(device)), truncation_psi).view(-1, 2, 1, d)
    mixed = torch.arange(n, device=device) >= torch.tensor(crossovers, device=device)[:, None]
    wplus = torch.where(mixed[..., None], w[:, 1], w[:, 0])  # [B, n, D]
    noise = [torch.cat(layer) for layer in zip(*noises, strict=True)]
    return Targets(wplus, noise, teacher.synthesis(wplus, noise))


@torch.no_grad()
def teacher_styles(
    teacher: Generator, num_samples: int, batch: int, truncation_psi: float,
    generator: torch.Generator, device: torch.device,
) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """(W+, constant noise) in chunks of ``batch`` from fresh z, without the teacher's
    synthesis network: for what needs the styles only (the demodulation calibration)."""
    noise = [n.to(device) for n in teacher.make_noise(1, "const")]
    for start in range(0, num_samples, batch):
        z = torch.randn(min(batch, num_samples - start), teacher.cfg.style_dim, generator=generator)
        w = teacher.truncate(teacher.mapping(z.to(device)), truncation_psi)
        yield teacher.broadcast(w), noise


def downsample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Area downsampling: box filter, consistent with the Haar LL band."""
    factor = image.shape[-1] // size
    return image if factor == 1 else F.avg_pool2d(image, factor)


def upsample(image: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear up-sampling to ``size`` (a lower-resolution output, as it would be shown)."""
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False)
