"""The StyleGAN2 residual discriminator: shapes, conditioning, R1."""

from __future__ import annotations

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.models.discriminator import Discriminator
from pipeline.training.gan_loss import d_fake_loss, d_real_loss, g_nonsaturating_loss, r1_penalty


@pytest.mark.parametrize("resolution", [16, 32, 64])
def test_logits_per_image(resolution):
    d = Discriminator(resolution, channel_max=16)
    out = d(torch.randn(4, 3, resolution, resolution))
    assert out.shape == (4,) and torch.isfinite(out).all()
    assert len(d.blocks) == resolution.bit_length() - 3  # one block per halving down to 4x4


def test_channel_table_and_odd_batches():
    d = Discriminator(8, channels={8: 8, 4: 16})
    assert d.final_linear.weight.shape == (16, 16 * 16)
    assert d(torch.randn(3, 3, 8, 8)).shape == (3,)  # group shrinks to divide the batch


def test_minibatch_stddev_sees_the_batch():
    d = Discriminator(16, channel_max=8)
    x = torch.randn(4, 3, 16, 16)
    same = x[:1].expand(4, -1, -1, -1)
    assert not torch.allclose(d(x)[:1], d(torch.cat([x[:1], same[1:]]))[:1])


def test_conditioning_changes_output():
    d = Discriminator(16, channel_max=16, cond_dim=5)
    x = torch.randn(2, 3, 16, 16)
    c1, c2 = torch.eye(5)[[0, 1]], torch.eye(5)[[2, 3]]
    assert not torch.allclose(d(x, c1), d(x, c2))
    with pytest.raises(ValueError, match="c of shape"):
        d(x)
    with pytest.raises(ValueError, match="unconditional"):
        Discriminator(16, channel_max=16)(x, c1)


def test_r1_penalty_positive_with_gradient_to_d():
    d = Discriminator(16, channel_max=16)
    real = torch.randn(4, 3, 16, 16, requires_grad=True)
    penalty = r1_penalty(d(real), real)
    assert penalty.ndim == 0 and penalty > 0
    penalty.backward()
    assert d.from_rgb.weight.grad is not None and d.from_rgb.weight.grad.abs().sum() > 0


def test_gan_losses():
    real, fake = torch.tensor([3.0, 2.0]), torch.tensor([-3.0, -2.0])
    assert d_real_loss(real) + d_fake_loss(fake) < d_real_loss(fake) + d_fake_loss(real)
    assert g_nonsaturating_loss(real) < g_nonsaturating_loss(fake)
    zero = torch.zeros(2)
    log2 = torch.log(torch.tensor(2.0)).item()
    assert d_real_loss(zero).item() == pytest.approx(log2) == d_fake_loss(zero).item()


@pytest.mark.parametrize("bad", [4, 24])
def test_bad_resolution(bad):
    with pytest.raises(PipelineError, match="power of two"):
        Discriminator(bad)


def test_missing_channel_entry():
    with pytest.raises(PipelineError, match=r"\[4\]"):
        Discriminator(8, channels={8: 8})
