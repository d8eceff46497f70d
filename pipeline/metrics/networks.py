"""The metric networks of ``params.yaml``'s ``metric_networks``, built once per stage.

A figure's name says which network measured it (``lpips_vgg``, ``lpips_alex``, ``fid``,
``kid``); on random stand-in weights the name gets ``_randinit`` (``lpips_alex_randinit``,
``fid_randinit``; the one rule: ``pipeline.metrics.stand_in_name``), so no stand-in
figure can pass for the real metric.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from ..params import LpipsNet, MetricNetworks
from .inception import HUB_NAME, InceptionFeatures
from .perceptual import LPIPS
from .weights import find_weights, resolve_weights


def lpips_network(nets: MetricNetworks, net: LpipsNet, cache_dir: str | Path,
                  device: torch.device | str = "cpu") -> LPIPS:
    """LPIPS on ``metric_networks.lpips_<net>``'s weights (path/URL/S3 or the hub cache)."""
    source = getattr(nets, f"lpips_{net}")
    return LPIPS(net, resolve_weights(source.weights, cache_dir, source.sha256), stand_in=source.stand_in,
                 size=nets.lpips_size).to(device).eval()


def inception_network(nets: MetricNetworks, cache_dir: str | Path,
                      device: torch.device | str = "cpu") -> InceptionFeatures:
    """pytorch-fid's Inception on ``metric_networks.inception``'s weights."""
    source = nets.inception
    weights = resolve_weights(source.weights, cache_dir, source.sha256)
    if source.stand_in and find_weights(weights, HUB_NAME) is None:  # no file anywhere
        return _stand_in_inception().to(device).eval()
    return InceptionFeatures(weights, stand_in=source.stand_in).to(device).eval()


@functools.cache
def _stand_in_inception() -> InceptionFeatures:
    """The random stand-in, built once per process (seconds of initialisation; it is frozen
    and the same network every time, so stages and tests in one process share it)."""
    return InceptionFeatures(None, stand_in=True)
