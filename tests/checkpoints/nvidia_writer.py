"""Writes NVIDIA-structured network pickles, so the tests can feed the reader real files.

Test-only: the library (``pipeline.checkpoints.nvidia``) only reads these files. The
pickles have stylegan2-ada-pytorch's structure: ``torch_utils.persistence`` reduce
calls (module source, class name, ``nn.Module`` state), ``dnnlib.util.EasyDict``
kwargs, tensors pickled as torch pickles them; nothing NVIDIA's is imported.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pipeline.checkpoints.nvidia import EasyDict, PersistentObject
from pipeline.io import atomic_path
from pipeline.models.ops import make_fir_kernel
from pipeline.models.stylegan2 import BLUR_TAPS, Generator

__all__ = ["STAND_IN_SOURCE", "dump_network_pickle", "nvidia_network", "save_nvidia_pickle"]

STAND_IN_SOURCE = (
    "# Stand-in for NVIDIA's training/networks.py, written by\n"
    "# tests/checkpoints/nvidia_writer.py. Loaders in this project never run it.\n"
    "class SynthesisBlock: ...\n"
)


class _Global:
    """A reference to ``module.name`` written into a pickle without importing the module."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name


_RECONSTRUCT = _Global("torch_utils.persistence", "_reconstruct_persistent_obj")
_EASYDICT = _Global("dnnlib.util", "EasyDict")


class _NetworkPickler(pickle._Pickler):  # the pure-Python pickler: its dispatch is extensible
    """Writes PersistentObject and EasyDict exactly as NVIDIA's classes pickle themselves."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_global_ref(self, obj: _Global) -> None:
        if id(obj) in self.memo:
            self.write(self.get(self.memo[id(obj)][0]))
            return
        if self.proto >= 4:
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    def save_persistent(self, obj: PersistentObject) -> None:
        # persistent_class.__reduce__: (_reconstruct_persistent_obj, (meta,), None)
        meta = {
            "type": "class",
            "version": obj.version,
            "module_src": obj.module_src,
            "class_name": obj.class_name,
            "state": obj.state,
        }
        self.save(_RECONSTRUCT)
        self.save((meta,))
        self.write(pickle.REDUCE)
        self.memoize(obj)

    def save_easydict(self, obj: EasyDict) -> None:
        # A dict subclass at protocol >= 2: cls, (), NEWOBJ, then SETITEMS.
        self.save(_EASYDICT)
        self.save(())
        self.write(pickle.NEWOBJ)
        self.memoize(obj)
        self._batch_setitems(iter(obj.items()))

    dispatch[_Global] = save_global_ref
    dispatch[PersistentObject] = save_persistent
    dispatch[EasyDict] = save_easydict


def dump_network_pickle(data: Any, path: str | Path, protocol: int = 4) -> None:
    """Pickle ``data`` (which may hold PersistentObject / EasyDict / tensors) atomically."""
    if protocol < 2:
        raise ValueError("NVIDIA network pickles need protocol >= 2")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        _NetworkPickler(f, protocol=protocol).dump(data)


def _module(
    class_name: str,
    params: dict | None = None,
    buffers: dict | None = None,
    modules: dict | None = None,
    init_kwargs: dict | None = None,
    **attrs: Any,
) -> PersistentObject:
    """A network module record shaped like ``torch.nn.Module.__dict__`` + NVIDIA's init args."""
    hooks = (
        "_backward_pre_hooks",
        "_backward_hooks",
        "_forward_hooks",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
        "_forward_pre_hooks",
        "_forward_pre_hooks_with_kwargs",
        "_state_dict_hooks",
        "_state_dict_pre_hooks",
        "_load_state_dict_pre_hooks",
        "_load_state_dict_post_hooks",
    )
    state: dict[str, Any] = {
        "training": False,
        "_parameters": collections.OrderedDict(
            (k, torch.nn.Parameter(v.detach().clone().cpu(), requires_grad=False))
            for k, v in (params or {}).items()
        ),
        "_buffers": collections.OrderedDict(
            (k, v.detach().clone().cpu()) for k, v in (buffers or {}).items()
        ),
        "_non_persistent_buffers_set": set(),
        **{h: collections.OrderedDict() for h in hooks},
        "_is_full_backward_hook": None,
        "_modules": collections.OrderedDict(modules or {}),
        **attrs,
        "_init_args": (),
        "_init_kwargs": dict(init_kwargs or {}),
    }
    return PersistentObject(class_name, state, STAND_IN_SOURCE)


def _fc(
    weight: torch.Tensor, bias: torch.Tensor, lr: float, activation: str, bias_init: float = 0
) -> PersistentObject:
    out_f, in_f = weight.shape
    return _module(
        "FullyConnectedLayer",
        {"weight": weight, "bias": bias},
        init_kwargs={
            "in_features": in_f,
            "out_features": out_f,
            "activation": activation,
            "lr_multiplier": lr,
            "bias_init": bias_init,
        },
        activation=activation,
        in_features=in_f,
        out_features=out_f,
        weight_gain=np.float64(lr / np.sqrt(in_f)),
        bias_gain=lr,
    )


def nvidia_network(generator: Generator) -> PersistentObject:
    """Our Generator as the ``training.networks.Generator`` record NVIDIA pickles hold."""
    cfg, sd = generator.cfg, generator.state_dict()
    d, ch, clamp = cfg.style_dim, cfg.channels, cfg.conv_clamp
    filt = make_fir_kernel(BLUR_TAPS)

    fcs = {
        f"fc{i}": _fc(sd[f"style.{i + 1}.weight"], sd[f"style.{i + 1}.bias"], cfg.lr_mlp, "lrelu")
        for i in range(cfg.n_mlp)
    }
    mapping = _module(
        "MappingNetwork",
        buffers={"w_avg": sd["w_avg"]},
        modules=fcs,
        init_kwargs={
            "z_dim": d,
            "c_dim": 0,
            "w_dim": d,
            "num_ws": cfg.n_latent,
            "num_layers": cfg.n_mlp,
            "lr_multiplier": cfg.lr_mlp,
        },
        z_dim=d,
        c_dim=0,
        w_dim=d,
        num_ws=cfg.n_latent,
        num_layers=cfg.n_mlp,
        w_avg_beta=0.995,
    )

    def affine(prefix: str) -> PersistentObject:
        return _fc(
            sd[f"{prefix}.conv.modulation.weight"],
            sd[f"{prefix}.conv.modulation.bias"],
            1,
            "linear",
            bias_init=1,
        )

    def layer(prefix: str, noise: int, res: int, up: int) -> PersistentObject:
        weight = sd[f"{prefix}.conv.weight"][0]
        return _module(
            "SynthesisLayer",
            {
                "weight": weight,
                "noise_strength": sd[f"{prefix}.noise.weight"].reshape(()),
                "bias": sd[f"{prefix}.activate.bias"],
            },
            {"resample_filter": filt, "noise_const": sd[f"noises.noise_{noise}"][0, 0]},
            {"affine": affine(prefix)},
            init_kwargs={
                "in_channels": weight.shape[1],
                "out_channels": weight.shape[0],
                "w_dim": d,
                "resolution": res,
                "up": up,
                "conv_clamp": clamp,
            },
            in_channels=weight.shape[1],
            out_channels=weight.shape[0],
            w_dim=d,
            resolution=res,
            up=up,
            use_noise=True,
            activation="lrelu",
            conv_clamp=clamp,
            padding=1,
            act_gain=np.float64(np.sqrt(2)),
        )

    def torgb(prefix: str) -> PersistentObject:
        weight = sd[f"{prefix}.conv.weight"][0]
        return _module(
            "ToRGBLayer",
            {"weight": weight, "bias": sd[f"{prefix}.bias"].reshape(-1)},
            modules={"affine": affine(prefix)},
            init_kwargs={
                "in_channels": weight.shape[1],
                "out_channels": 3,
                "w_dim": d,
                "conv_clamp": clamp,
            },
            conv_clamp=clamp,
            in_channels=weight.shape[1],
            out_channels=3,
            w_dim=d,
            weight_gain=np.float64(1 / np.sqrt(weight.shape[1])),
        )

    blocks = collections.OrderedDict()
    res_list = sorted(ch)
    for i, res in enumerate(res_list):
        if res == 4:
            params, modules = (
                {"const": sd["input.input"][0]},
                {"conv1": layer("conv1", 0, 4, 1), "torgb": torgb("to_rgb1")},
            )
        else:
            k = i - 1
            params, modules = (
                {},
                {
                    "conv0": layer(f"convs.{2 * k}", 2 * k + 1, res, 2),
                    "conv1": layer(f"convs.{2 * k + 1}", 2 * k + 2, res, 1),
                    "torgb": torgb(f"to_rgbs.{k}"),
                },
            )
        in_ch = 0 if res == 4 else ch[res // 2]
        blocks[f"b{res}"] = _module(
            "SynthesisBlock",
            params,
            {"resample_filter": filt},
            modules,
            init_kwargs={
                "in_channels": in_ch,
                "out_channels": ch[res],
                "w_dim": d,
                "resolution": res,
                "img_channels": 3,
                "is_last": res == cfg.resolution,
                "use_fp16": False,
                "conv_clamp": clamp,
            },
            in_channels=in_ch,
            w_dim=d,
            resolution=res,
            img_channels=3,
            is_last=res == cfg.resolution,
            architecture="skip",
            use_fp16=False,
            channels_last=False,
            num_conv=1 if res == 4 else 2,
            num_torgb=1,
        )
    synthesis_kwargs = EasyDict(channel_max=max(ch.values()), num_fp16_res=0, conv_clamp=clamp)
    synthesis = _module(
        "SynthesisNetwork",
        modules=blocks,
        init_kwargs=dict(
            w_dim=d, img_resolution=cfg.resolution, img_channels=3, **synthesis_kwargs
        ),
        w_dim=d,
        img_resolution=cfg.resolution,
        img_resolution_log2=cfg.log_size,
        img_channels=3,
        block_resolutions=res_list,
        num_ws=cfg.n_latent,
    )
    return _module(
        "Generator",
        modules={"synthesis": synthesis, "mapping": mapping},
        init_kwargs={
            "z_dim": d,
            "w_dim": d,
            "c_dim": 0,
            "img_resolution": cfg.resolution,
            "img_channels": 3,
            "mapping_kwargs": EasyDict(num_layers=cfg.n_mlp, lr_multiplier=cfg.lr_mlp),
            "synthesis_kwargs": synthesis_kwargs,
        },
        z_dim=d,
        c_dim=0,
        w_dim=d,
        img_resolution=cfg.resolution,
        img_channels=3,
        num_ws=cfg.n_latent,
    )


def save_nvidia_pickle(generator: Generator, path: str | Path, protocol: int = 4) -> None:
    """Write ``generator`` as an NVIDIA network-snapshot pickle.

    Same structure as stylegan2-ada-pytorch's ``network-snapshot-*.pkl``: a dict whose
    networks are persistent-object reduce calls with module source, class name and
    ``nn.Module`` state, kwargs as ``dnnlib.util.EasyDict``, tensors pickled as torch
    pickles them. ``D`` and ``augment_pipe`` are None (a generator-only export).
    """
    g = nvidia_network(generator)
    data = {
        "training_set_kwargs": EasyDict(
            class_name="training.dataset.ImageFolderDataset",
            resolution=generator.cfg.resolution,
            use_labels=False,
        ),
        "G": g,
        "D": None,
        "G_ema": g,
        "augment_pipe": None,
    }
    dump_network_pickle(data, path, protocol=protocol)
