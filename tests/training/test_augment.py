"""DiffAugment: shapes, gradients, policy parsing."""

from __future__ import annotations

import pytest
import torch

from pipeline.training.augment import diff_augment


def _x() -> torch.Tensor:
    return torch.rand(4, 3, 16, 16) * 2 - 1


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "color,translation,cutout"])
def test_shape_kept_and_gradient_flows(policy):
    x = _x().requires_grad_(True)
    y = diff_augment(x, policy, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert not torch.equal(y, x)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_empty_policy_is_identity():
    x = _x()
    assert diff_augment(x, "") is x
    assert diff_augment(x, " , ") is x


def test_seeded_generator_reproduces_and_calls_differ():
    x = _x()
    a = diff_augment(x, generator=torch.Generator().manual_seed(1))
    b = diff_augment(x, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    assert torch.equal(a, b)
    assert not torch.equal(diff_augment(x, generator=g), diff_augment(x, generator=g))


def test_translation_shifts_content_with_zero_fill():
    x = torch.ones(8, 1, 16, 16)
    y = diff_augment(x, "translation", generator=torch.Generator().manual_seed(0))
    assert set(y.unique().tolist()) <= {0.0, 1.0}
    zeros = (y == 0).flatten(1).sum(1)
    assert (zeros <= 16 * 16 - 14 * 14).all() and zeros.sum() > 0  # at most 2 px each way


def test_cutout_zeroes_a_square_of_half_the_side():
    x = torch.ones(8, 1, 16, 16)
    y = diff_augment(x, "cutout", generator=torch.Generator().manual_seed(0))
    zeros = (y == 0).flatten(1).sum(1)
    assert (zeros <= 64).all() and (zeros > 0).all()


def test_unknown_policy_is_rejected():
    with pytest.raises(ValueError, match="blur"):
        diff_augment(_x(), "color,blur")
