"""The StyleGAN2 teacher matches the paper's structure and published figures."""

import pytest
import torch

from pipeline.models.stylegan2 import Generator, StyleGAN2Config, random_generator


def test_config_f_1024_has_the_published_synthesis_parameter_count():
    cfg = StyleGAN2Config.config_f(1024)
    g = Generator(cfg)
    synthesis = sum(p.numel() for n, p in g.named_parameters() if not n.startswith("style."))
    assert synthesis == 28_268_812  # 28.27M in the StyleGAN2 / MobileStyleGAN papers
    assert cfg.n_latent == 18 and cfg.num_layers == 17
    assert cfg.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256,
                            256: 128, 512: 64, 1024: 32}


@pytest.mark.parametrize("resolution", [8, 32, 64, 128])
def test_any_power_of_two_resolution_generates_images_of_that_size(resolution):
    cfg = StyleGAN2Config.config_f(resolution, channel_max=16, style_dim=16, n_mlp=2)
    out = random_generator(cfg, 0)(torch.randn(2, 16))
    assert out.image.shape == (2, 3, resolution, resolution)
    assert out.wplus.shape == (2, cfg.n_latent, 16)
    assert [n.shape[-1] for n in out.noise] == cfg.noise_resolutions()
    assert torch.isfinite(out.image).all()


def test_random_teacher_is_deterministic_for_a_seed_and_differs_across_seeds(tiny_cfg):
    a, b, c = (random_generator(tiny_cfg, s) for s in (3, 3, 4))
    z = torch.randn(2, tiny_cfg.style_dim)
    ia = a(z, noise_mode="const").image
    assert torch.equal(ia, b(z, noise_mode="const").image)
    assert not torch.allclose(ia, c(z, noise_mode="const").image)


def test_random_teacher_draws_image_like_values_where_a_raw_init_does_not():
    cfg = StyleGAN2Config.config_f(32, channel_max=32, style_dim=32, n_mlp=4)
    z = torch.randn(64, 32, generator=torch.Generator().manual_seed(11))  # not the scale's latents
    image = random_generator(cfg, 2)(z, generator=torch.Generator().manual_seed(12)).image
    raw = random_generator(cfg, 2, image_like=False)(z, generator=torch.Generator().manual_seed(12)).image
    assert 0.4 < image.pow(2).mean().sqrt() < 0.6  # RMS 0.5
    assert (image.abs() > 1).float().mean() < 0.1 and image.abs().max() < 4
    assert raw.pow(2).mean().sqrt() > 1.0  # what the scale is for
    torch.testing.assert_close(image / image.pow(2).mean().sqrt(), raw / raw.pow(2).mean().sqrt())


def test_given_noise_is_used_and_returned_so_a_student_can_share_it(tiny_teacher):
    z = torch.randn(2, tiny_teacher.cfg.style_dim)
    first = tiny_teacher(z, generator=torch.Generator().manual_seed(5))
    again = tiny_teacher(z, noise=first.noise)
    assert torch.equal(first.image, again.image)
    other = tiny_teacher(z, generator=torch.Generator().manual_seed(6))
    assert not torch.allclose(first.image, other.image)  # noise strengths are non-zero


def test_truncation_moves_w_toward_w_avg(tiny_teacher):
    z = torch.randn(4, tiny_teacher.cfg.style_dim)
    w = tiny_teacher.mapping(z)
    assert torch.equal(tiny_teacher.truncate(w, 1.0), w)
    assert torch.allclose(tiny_teacher.truncate(w, 0.0), tiny_teacher.w_avg.expand_as(w))
    half = tiny_teacher.truncate(w, 0.5)
    assert torch.allclose(half, (w + tiny_teacher.w_avg) / 2, atol=1e-6)


def test_style_mixing_switches_styles_at_the_crossover(tiny_teacher):
    d = tiny_teacher.cfg.style_dim
    z1, z2 = torch.randn(2, d), torch.randn(2, d)
    out = tiny_teacher(z1, z_mix=z2, crossover=3)
    w1, w2 = tiny_teacher.mapping(z1), tiny_teacher.mapping(z2)
    assert torch.allclose(out.wplus[:, :3], w1.unsqueeze(1).expand(-1, 3, -1))
    assert torch.allclose(out.wplus[:, 3:], w2.unsqueeze(1).expand(-1, out.wplus.shape[1] - 3, -1))
    with pytest.raises(ValueError, match="crossover"):
        tiny_teacher(z1, z_mix=z2, crossover=0)


def test_demodulation_normalises_each_output_filter(tiny_teacher):
    conv = tiny_teacher.convs[1].conv
    w = torch.randn(3, tiny_teacher.cfg.style_dim)
    s = conv.modulation(w).view(3, 1, -1, 1, 1)
    weight = conv.scale * conv.weight * s
    demod = weight * torch.rsqrt(weight.pow(2).sum([2, 3, 4], keepdim=True) + 1e-8)
    assert torch.allclose(demod.pow(2).sum([2, 3, 4]), torch.ones(3, conv.out_ch), atol=1e-4)


def test_synthesis_rejects_wplus_of_the_wrong_shape(tiny_teacher):
    noise = tiny_teacher.make_noise(1)
    with pytest.raises(ValueError, match="wplus must be"):
        tiny_teacher.synthesis(torch.randn(1, 3, tiny_teacher.cfg.style_dim), noise)


@pytest.mark.parametrize("bad", [
    dict(resolution=48, channels={4: 8}),
    dict(resolution=16, channels={4: 8, 8: 8}),
    dict(resolution=8, channels={4: 8, 8: 0}),
])
def test_invalid_architectures_are_rejected(bad):
    with pytest.raises(ValueError):
        StyleGAN2Config(**bad)
