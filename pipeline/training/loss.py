"""The distillation objective (MobileStyleGAN section 4, BlazeStyleGAN's additions).

    L_G = pixel terms (wavelet and image space, L1 + L2, every level)
        + w_p LPIPS(final) + w_ms mean_levels LPIPS(level) + w_gan softplus(-D(aug(fake)))
    L_D = softplus(D(aug(fake))) + softplus(-D(aug(real)))
        + (gamma / 2) ||grad D(real)||^2 every N steps (lazy R1, scaled by N)
          (three terms back-propagated one after the other: one D graph in memory at a time)
    L_C = w_mse MSE(sub, full) + w_lpips LPIPS(sub, full)    (Anycost's consistency loss,
          between a sampled sub-network and the full network, elastic training only)

With a conditioned discriminator every D call also gets ``cond``, the encoding of the
sampled architecture; images below D's resolution are bilinearly up-sampled for it.

Targets come from the teacher on the fly: the same W+ and noise feed both networks,
and each student level is compared with the teacher image area-downsampled to the
level's resolution (and with its Haar DWT for wavelet heads).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..models.mobile import StudentOutput
from ..models.sampling import Targets, downsample, upsample
from ..models.wavelets import dwt
from ..params import LossWeights
from .augment import diff_augment
from .gan_loss import d_fake_loss, d_real_loss, g_nonsaturating_loss, r1_penalty


class DistillLoss:
    """Generator and discriminator phases of the distillation objective."""

    def __init__(self, weights: LossWeights, lpips=None, augment: str = "",
                 r1_gamma: float = 10.0) -> None:
        if lpips is None and (weights.perceptual or weights.multiscale_perceptual):
            raise ValueError("perceptual loss weights are set but no LPIPS network was given")
        self.w, self.lpips, self.augment, self.r1_gamma = weights, lpips, augment, r1_gamma

    def _lpips(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y).mean()

    def generator_loss(
        self, out: StudentOutput, target: Targets, discriminator=None, wavelet_heads: bool = True,
        generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        w = self.w
        parts: dict[str, torch.Tensor] = {}
        wl1 = wl2 = pl1 = pl2 = out.image.new_zeros(())
        pyramid = [downsample(target.image, image.shape[-1]) for image in out.images]
        for head, image, t in zip(out.heads, out.images, pyramid, strict=True):
            if wavelet_heads:
                wt = dwt(t)
                wl1 = wl1 + (head - wt).abs().mean()
                wl2 = wl2 + (head - wt).pow(2).mean()
            pl1 = pl1 + (image - t).abs().mean()
            pl2 = pl2 + (image - t).pow(2).mean()
        n = len(out.images)
        parts.update(wavelet_l1=wl1 / n, wavelet_l2=wl2 / n, pixel_l1=pl1 / n, pixel_l2=pl2 / n)
        total = (w.wavelet_l1 * parts["wavelet_l1"] + w.wavelet_l2 * parts["wavelet_l2"]
                 + w.pixel_l1 * parts["pixel_l1"] + w.pixel_l2 * parts["pixel_l2"])
        if w.perceptual:
            parts["perceptual"] = self._lpips(out.image, target.image)
            total = total + w.perceptual * parts["perceptual"]
        if w.multiscale_perceptual:
            levels = [self._lpips(img, t) for img, t in zip(out.images[:-1], pyramid[:-1], strict=True)
                      if img.shape[-1] >= 16]
            if levels:
                parts["multiscale_perceptual"] = torch.stack(levels).mean()
                total = total + w.multiscale_perceptual * parts["multiscale_perceptual"]
        if w.gan and discriminator is not None:
            fake = upsample(out.image, discriminator.resolution)
            fake_pred = discriminator(diff_augment(fake, self.augment, generator=generator), cond)
            parts["gan_g"] = g_nonsaturating_loss(fake_pred)
            total = total + w.gan * parts["gan_g"]
        parts["total_g"] = total
        return total, parts

    def discriminator_terms(
        self, discriminator, fake: torch.Tensor, real: torch.Tensor,
        generator: torch.Generator | None = None, cond: torch.Tensor | None = None,
        r1_every: int = 0,
    ) -> list[Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]]]:
        """L_D as separate terms: fake, real and, when ``r1_every`` (a lazy R1 step), R1.
        Back-propagate each before building the next: the gradient of their sum with one
        D graph alive at a time (at 1024x1024 one holds about 1.5 GB per image)."""
        fake = upsample(fake.detach(), discriminator.resolution)

        def fake_term() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            pred = discriminator(diff_augment(fake, self.augment, generator=generator), cond)
            loss = d_fake_loss(pred)
            return loss, {"gan_d_fake": loss, "d_fake": pred.mean()}

        def real_term() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            pred = discriminator(diff_augment(real, self.augment, generator=generator), cond)
            loss = d_real_loss(pred)
            return loss, {"gan_d_real": loss, "d_real": pred.mean()}

        def r1_term() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
            with torch.autocast(real.device.type, enabled=False):  # a gradient's norm: fp32
                return self.r1_loss(discriminator, real.float(), r1_every, cond)

        return [fake_term, real_term, *([r1_term] if r1_every else [])]

    def r1_loss(self, discriminator, real: torch.Tensor, every: int,
                cond: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """Lazy R1 on un-augmented reals, scaled by the interval (StyleGAN2's lazy regularisation)."""
        real = real.detach().requires_grad_(True)
        penalty = r1_penalty(discriminator(real, cond), real)
        return self.r1_gamma / 2 * penalty * every, {"r1": penalty}

    def consistency_loss(self, sub: torch.Tensor, full: torch.Tensor, w_mse: float,
                         w_lpips: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Anycost's consistency: a sub-network's image against the full network's (detached)."""
        parts = {"consistency_mse": F.mse_loss(sub, full.detach())}
        total = w_mse * parts["consistency_mse"]
        if w_lpips:
            if self.lpips is None:
                raise ValueError("consistency_lpips is set but no LPIPS network was given")
            parts["consistency_lpips"] = self._lpips(sub, full.detach())
            total = total + w_lpips * parts["consistency_lpips"]
        return total, parts
