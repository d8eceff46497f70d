"""Fixed latents -> distances to a reference: the one path behind distill's validation,
the search's fitness and the evaluate stage's per-model figures.

``FixedLatents`` draws ``num_samples`` latents once (seeded, each sample from its own
stream: the chunk size changes nothing) and keeps, chunk by chunk, the teacher's W+,
noise and image; every model is then run on exactly those inputs.
One resolution convention everywhere: a model whose output is smaller than the
teacher's is bilinearly up-sampled to the full size, as it would be shown, so the
detail it lacks counts against it.

Distances per sample: ``lpips_<net>`` (named by :attr:`LPIPS.name`, ``_randinit`` on a
stand-in backbone), ``mse``, ``pixel_l1``, ``psnr``, ``ssim`` and, from 161 px,
``ms_ssim`` (weight-free: real figures on any machine) and ``exploded`` (images in
[-1, 1]); reported as means with robust statistics beside them (medians, tails, counts).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import torch

from ..models.sampling import Targets, fixed_targets, upsample
from ..models.stylegan2 import Generator
from .perceptual import LPIPS

Synthesis = Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]  # (W+, noise) -> image

log = logging.getLogger(__name__)


def sample_bytes(teacher: Generator) -> int:
    """What one drawn sample holds: W+, one noise map per layer and the image (float32)."""
    c = teacher.cfg
    pixels = 3 * c.resolution**2 + sum(r * r for r in c.noise_resolutions())
    return 4 * (pixels + c.n_latent * c.style_dim)


KEEP_BYTES = 1 << 30  # drawn chunks are held up to this size; beyond it, drawn again per pass


class FixedLatents:
    """The same latents, noise and teacher images for every model compared on them, in
    chunks of ``batch_size``. ``keep``: hold the chunks (a few latents scored many times:
    validation, search); otherwise each pass draws them again from the seed (many latents,
    one pass: evaluate). None: hold them when they take at most :data:`KEEP_BYTES` (at
    1024x1024 a sample's image and noise take 24 MB: a thousand would not fit a GPU)."""

    def __init__(self, teacher: Generator, num_samples: int, batch_size: int,
                 truncation_psi: float, seed: int, device: torch.device | str,
                 keep: bool | None = None, mixing: float = 0.0) -> None:
        self.teacher, self.num_samples, self.batch_size = teacher, num_samples, batch_size
        self.truncation_psi, self.seed, self.device = truncation_psi, seed, device
        self.mixing = mixing  # style-mixing probability of the latents
        self.resolution = teacher.cfg.resolution
        held = num_samples * sample_bytes(teacher)
        self.keep = held <= KEEP_BYTES if keep is None else keep
        if keep is None and not self.keep:
            log.info("%d fixed latents at %dx%d would hold %.1f GB: drawn again on every pass",
                     num_samples, self.resolution, self.resolution, held / 1e9)
        self._kept = list(self._draw()) if self.keep else None

    def _draw(self) -> Iterator[Targets]:
        for start in range(0, self.num_samples, self.batch_size):
            chunk = range(start, min(start + self.batch_size, self.num_samples))
            yield fixed_targets(self.teacher, self.seed, chunk, self.truncation_psi, self.mixing,
                                self.device)

    def __iter__(self) -> Iterator[Targets]:
        return iter(self._kept) if self._kept is not None else self._draw()

    def __len__(self) -> int:
        return self.num_samples

    def full_size(self, image: torch.Tensor) -> torch.Tensor:
        """The one resolution convention: up-sampled to the teacher's size, as shown."""
        return upsample(image.float(), self.resolution)

    @torch.no_grad()
    def mean_image(self) -> torch.Tensor:
        """The teacher's mean image over these latents, clamped to [-1, 1] as PSNR sees it."""
        return sum(t.image.float().clamp(-1, 1).sum(0) for t in self) / len(self)

    @torch.no_grad()
    def mean_image_psnr(self, mean: torch.Tensor | None = None) -> dict[str, float]:
        """The constant a student must beat: PSNR of the teacher's mean image (``mean``, or
        :meth:`mean_image`: one more pass) to each teacher image, ``psnr_median``, ``psnr_p10``."""
        mean = self.mean_image() if mean is None else mean
        per_sample = PerSample()
        per_sample.add({"psnr": torch.cat([psnr(mean.expand_as(t.image), t.image) for t in self])})
        return {k: v for k, v in per_sample.result().items() if k != "psnr"}

    @torch.no_grad()
    def outputs(self, model: Synthesis) -> Iterator[tuple[Targets, torch.Tensor]]:
        """Per chunk: the targets and ``model``'s image on them at the full resolution."""
        for t in self:
            yield t, self.full_size(model(t.wplus, t.noise))


@torch.no_grad()
def distances(image: torch.Tensor, reference: torch.Tensor, lpips: LPIPS) -> dict[str, torch.Tensor]:
    """Per-sample distances of ``image`` to ``reference`` (same shape, [-1, 1]); ``psnr`` on
    both clamped to [-1, 1] (peak-to-peak 2, weight-free, so it means something offline;
    capped at 100 dB), ``exploded`` 1 where the image's largest magnitude is over 1.5x the
    reference's (a sample blowing up, which means alone would average away)."""
    reference = reference.float()
    peak = image.abs().flatten(1).amax(1)
    out = {lpips.name: lpips(image, reference),
           "mse": (image - reference).pow(2).mean((1, 2, 3)),
           "pixel_l1": (image - reference).abs().mean((1, 2, 3)),
           "psnr": psnr(image, reference),
           **structural_similarity(image, reference),
           "exploded": (peak > 1.5 * reference.abs().flatten(1).amax(1)).float()}
    return out


def psnr(image: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-sample PSNR in dB of images clamped to [-1, 1] (peak-to-peak 2), capped at 100."""
    mse = (image.float().clamp(-1, 1) - reference.float().clamp(-1, 1)).pow(2).mean((1, 2, 3))
    return 10 * torch.log10(4 / mse.clamp_min(4e-10))


def structural_similarity(image: torch.Tensor, reference: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5) of the images
    clamped to [-1, 1] and read as [0, 1], and MS-SSIM (5 scales) where the image is large
    enough for its four halvings (over 160 px)."""
    from pytorch_msssim import ms_ssim, ssim

    a, b = ((x.float().clamp(-1, 1) + 1) / 2 for x in (image, reference))
    out = {"ssim": ssim(a, b, data_range=1.0, size_average=False)}
    if min(a.shape[-2:]) > 160:
        out["ms_ssim"] = ms_ssim(a, b, data_range=1.0, size_average=False)
    return out


# Robust per-sample figures beside the means: a 5 % failure shows in a tail, not a mean.
QUANTILES = {"psnr": {"median": 0.5, "p10": 0.1}, "ssim": {"p10": 0.1},
             "pixel_l1": {"median": 0.5, "p90": 0.9, "max": 1.0}}


class PerSample:
    """Named per-sample figures, kept whole, summarised as means with the quantiles of
    :data:`QUANTILES` beside them (``psnr_median``, ``pixel_l1_p90_teacher``...) and
    ``exploded`` as a count."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, str], list[torch.Tensor]] = {}

    def add(self, figures: dict[str, torch.Tensor], suffix: str = "") -> None:
        for k, v in figures.items():
            self.values.setdefault((k, suffix), []).append(v.detach().double().cpu())

    def result(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for (k, suffix), chunks in self.values.items():
            v = torch.cat(chunks)
            if k == "exploded":
                out[k + suffix] = int(v.sum())
                continue
            out[k + suffix] = float(v.mean())
            for name, q in QUANTILES.get(k, {}).items():
                out[f"{k}_{name}{suffix}"] = float(torch.quantile(v, q))
        return out


def mean_distances(model: Synthesis, latents: FixedLatents, lpips: LPIPS,
                   references: dict[str, list[torch.Tensor] | Synthesis | None] | None = None,
                   ) -> dict[str, float]:
    """Mean distances of ``model`` to each reference, by name suffix: per-chunk images at the
    full resolution, a model run on each chunk, or None for the teacher's images. Default:
    to the teacher, no suffix."""
    means = PerSample()
    for i, (t, image) in enumerate(latents.outputs(model)):
        for suffix, ref in (references or {"": None}).items():
            if ref is None:
                ref_image = t.image
            elif isinstance(ref, list):
                ref_image = ref[i]
            else:
                ref_image = latents.full_size(ref(t.wplus, t.noise))
            means.add(distances(image, ref_image, lpips), suffix)
    return means.result()
