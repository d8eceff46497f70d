"""Fixed latents -> distances: the same latents for every model, one resolution convention,
and per-sample figures that a few failing samples cannot hide in a mean."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.metrics.fixed_latents import (
    FixedLatents,
    PerSample,
    distances,
    mean_distances,
    structural_similarity,
)
from pipeline.metrics.perceptual import LPIPS
from pipeline.models.sampling import downsample


@pytest.fixture(scope="module")
def lpips():
    return LPIPS("alex", None, stand_in=True)


def test_kept_and_redrawn_latents_are_the_same(tiny_teacher):
    kept = FixedLatents(tiny_teacher, 10, 4, 1.0, seed=3, device="cpu")
    drawn = FixedLatents(tiny_teacher, 10, 4, 1.0, seed=3, device="cpu", keep=False)
    assert len(kept) == len(drawn) == 10
    pairs = list(zip(kept, drawn, strict=True))
    assert [len(a.image) for a, _ in pairs] == [4, 4, 2]
    for a, b in pairs:
        assert torch.equal(a.wplus, b.wplus) and torch.equal(a.image, b.image)
    other = FixedLatents(tiny_teacher, 10, 4, 1.0, seed=4, device="cpu")
    assert not torch.equal(next(iter(other)).image, next(iter(kept)).image)


def test_the_chunk_size_changes_no_sample_and_styles_mix_sample_by_sample(tiny_teacher):
    """validation.batch_size and friends are memory, not results: sample i is the same in
    chunks of 3 and of 8, W+, noise and image; mixing draws a crossover per sample.

    Latents and noise are drawn per sample, so they are bit-identical. W+ and the image go
    through batched matrix products whose last bits depend on the batch size on some CPUs
    (AMD EPYC, AVX-512 kernels): equal within float32 rounding, not bit for bit."""
    def whole(batch_size: int):
        chunks = list(FixedLatents(tiny_teacher, 24, batch_size, 0.7, seed=5, device="cpu", mixing=0.5))
        noise = [torch.cat(layer) for layer in zip(*(c.noise for c in chunks), strict=True)]
        return torch.cat([c.wplus for c in chunks]), noise, torch.cat([c.image for c in chunks])

    (w3, n3, i3), (w8, n8, i8) = whole(3), whole(8)
    assert all(torch.equal(a, b) for a, b in zip(n3, n8, strict=True))
    torch.testing.assert_close(w3, w8, rtol=1e-5, atol=1e-6)  # float32 rounding, a few ulps
    torch.testing.assert_close(i3, i8, rtol=0, atol=1e-5)  # batched arithmetic: ~1e-6 apart
    # Where each sample's styles switch to its second latent (n_latent: they do not).
    n = tiny_teacher.cfg.n_latent
    switch = [next((k for k in range(1, n) if not torch.equal(w[k], w[0])), n) for w in w3]
    mixed = [k for k in switch if k < n]
    assert 4 <= len(mixed) <= 20 and len(set(mixed)) >= 3, switch
    assert len(set(switch[:8])) >= 2, "one chunk's samples mix alike"


def test_a_smaller_output_is_compared_up_sampled_to_full_size(tiny_teacher, lpips):
    latents = FixedLatents(tiny_teacher, 4, 4, 1.0, seed=0, device="cpu")

    def half_size(wplus, noise):  # what a 16x16 sub-network would show
        return downsample(tiny_teacher.synthesis(wplus, noise), 16)

    ((t, image),) = list(latents.outputs(half_size))
    assert image.shape == t.image.shape
    figures = mean_distances(half_size, latents, lpips)
    assert 0 < figures["pixel_l1"] and figures["psnr_median"] > 10
    assert mean_distances(tiny_teacher.synthesis, latents, lpips)["pixel_l1"] == 0


def test_psnr_and_explosions_per_sample(lpips):
    ref = torch.rand(4, 3, 32, 32) * 2 - 1
    image = ref.clone()
    image[0] += 0.1  # MSE 0.01 on clamped images: 10 log10(4 / 0.01) = 26.0 dB
    image[1] *= 3  # blows up: 3x the reference's largest value
    d = distances(image, ref, lpips)
    assert d["exploded"].tolist() == [0, 1, 0, 0]
    assert d["psnr"][2] == pytest.approx(100)  # identical: capped
    assert d["psnr"][1] < d["psnr"][0] < 27


def test_the_mean_image_baseline_is_what_a_constant_scores(tiny_teacher):
    """The teacher's mean image, scored like a student: kept and redrawn latents agree, a
    given mean is used as it is, and no constant beats the mean (it minimises the MSE)."""
    kept = FixedLatents(tiny_teacher, 12, 5, 1.0, seed=2, device="cpu")
    drawn = FixedLatents(tiny_teacher, 12, 5, 1.0, seed=2, device="cpu", keep=False)
    images = torch.cat([t.image for t in kept]).clamp(-1, 1)
    assert torch.allclose(kept.mean_image(), images.mean(0), atol=1e-6)
    base = kept.mean_image_psnr()
    assert set(base) == {"psnr_median", "psnr_p10"} and base["psnr_p10"] <= base["psnr_median"] < 100
    assert drawn.mean_image_psnr() == pytest.approx(base)
    mse = lambda c: (images - c).pow(2).mean((1, 2, 3)).mean()  # noqa: E731
    assert mse(images.mean(0)) < mse(images.mean(0) + 0.05) and mse(images.mean(0)) < mse(0.0)
    zeros = kept.mean_image_psnr(torch.zeros_like(images[0]))
    assert zeros["psnr_median"] < base["psnr_median"]


def test_ssim_is_one_for_identical_images_and_falls_with_structure_lost(lpips):
    torch.manual_seed(0)
    ref = torch.nn.functional.avg_pool2d(torch.rand(3, 3, 64, 64), 5, 1, 2) * 2 - 1  # smooth
    blurred = torch.nn.functional.avg_pool2d(ref, 9, 1, 4)
    noisy = ref + 0.5 * torch.randn_like(ref)
    d = distances(torch.stack([ref[0], blurred[1], noisy[2]]), ref, lpips)
    assert d["ssim"][0] == pytest.approx(1.0, abs=1e-5)
    assert 0 < d["ssim"][2] < d["ssim"][1] < 0.99 and "ms_ssim" not in d  # 64 px: too small
    large = structural_similarity(noisy.repeat(1, 1, 3, 3), ref.repeat(1, 1, 3, 3))  # 192 px
    assert large["ms_ssim"].shape == (3,) and (large["ms_ssim"] < 1).all()
    top = ref > ref.quantile(0.8)  # a fifth of the pixels: out of range, the reference saturated
    same = structural_similarity(torch.where(top, 100.0, ref), torch.where(top, 1.0, ref))["ssim"]
    assert torch.allclose(same, torch.ones(3), atol=1e-5)  # both clamped to [-1, 1]: as shown


def test_a_few_exploding_samples_show_in_the_tails_and_the_count(lpips):
    """One sample in 20 off by a lot: the mean moves, the median does not, and the count
    and the tails say so."""
    ref = torch.rand(20, 3, 32, 32) * 2 - 1
    image = ref + 0.05
    image[7] = ref[7] * 50
    figures = PerSample()
    figures.add(distances(image[:12], ref[:12], lpips))
    figures.add(distances(image[12:], ref[12:], lpips), "")
    r = figures.result()
    assert r["exploded"] == 1
    assert r["pixel_l1_median"] == pytest.approx(0.05, abs=1e-4)
    assert r["pixel_l1_max"] > 10 and r["pixel_l1"] > 10 * r["pixel_l1_median"]
    assert r["psnr_p10"] < r["psnr_median"] and math.isfinite(r["psnr_p10"])


def test_latents_that_would_not_fit_are_drawn_again_each_pass(tiny_teacher, monkeypatch):
    """By default the chunks are held only up to KEEP_BYTES (a sample at 1024x1024 holds
    24 MB of image and noise): beyond it every pass draws the same ones again."""
    from pipeline.metrics import fixed_latents

    c = tiny_teacher.cfg
    per_sample = fixed_latents.sample_bytes(tiny_teacher)
    assert per_sample == 4 * (3 * 32 * 32 + sum(r * r for r in c.noise_resolutions())
                              + c.n_latent * c.style_dim)
    assert FixedLatents(tiny_teacher, 10, 4, 1.0, seed=3, device="cpu").keep
    monkeypatch.setattr(fixed_latents, "KEEP_BYTES", 9 * per_sample)
    drawn = FixedLatents(tiny_teacher, 10, 4, 1.0, seed=3, device="cpu")
    assert not drawn.keep
    first, again = list(drawn), list(drawn)
    assert all(torch.equal(a.image, b.image) for a, b in zip(first, again, strict=True))
    assert FixedLatents(tiny_teacher, 9, 4, 1.0, seed=3, device="cpu").keep
