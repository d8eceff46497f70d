"""Non-saturating GAN losses and the R1 penalty (Goodfellow et al., 2014; Mescheder et al., 2018),
as StyleGAN2 trains with them. Predictions are D's logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def d_fake_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """D's logistic loss on fakes, E[softplus(D(G(z)))] = -E[log(1 - s(D(G(z))))]."""
    return F.softplus(fake_pred).mean()


def d_real_loss(real_pred: torch.Tensor) -> torch.Tensor:
    """D's logistic loss on reals, E[softplus(-D(x))] = -E[log s(D(x))]; L_D is the sum of
    both (kept apart so each can be back-propagated on its own)."""
    return F.softplus(-real_pred).mean()


def g_nonsaturating_loss(fake_pred: torch.Tensor) -> torch.Tensor:
    """L_G = E[softplus(-D(G(z)))] = -E[log s(D(G(z)))]: strong gradients while D wins."""
    return F.softplus(-fake_pred).mean()


def r1_penalty(real_pred: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """R1 = E_x[||grad_x D(x)||^2] on reals (``real_images`` must require grad); keeps D
    smooth on the data. Differentiable (create_graph) so it can be minimised."""
    (grad,) = torch.autograd.grad(real_pred.sum(), real_images, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()
