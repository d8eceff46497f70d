"""NVIDIA network pickles (stylegan2-ada-pytorch, stylegan3), read without running any code.

Those files are ``pickle.dump(dict(G=..., D=..., G_ema=..., augment_pipe=...,
training_set_kwargs=...))`` where every network is a ``torch_utils.persistence``
object: it pickles as a call ``_reconstruct_persistent_obj(meta)`` whose
``meta`` holds the *Python source* of the module that defines the class
(``module_src``), the class name, and the module's ``__dict__`` (``_parameters``,
``_buffers``, ``_modules`` and constructor attributes such as ``conv_clamp``).
NVIDIA's loader ``exec``s that source; a stock ``pickle.load`` can also call any
importable function. Here a restricted unpickler resolves only an explicit
allowlist of globals, each to a stand-in that builds data (a tensor from raw bytes
via ``torch.load(weights_only=True)``, a dict, a numpy scalar): persistent
objects become :class:`PersistentObject` records whose source is kept as text and
never executed. Anything else (``os.system``, ``builtins.eval``, ...) stops the
load before it is called.

``G_ema`` is then converted to rosinality's key layout (what our
:class:`~pipeline.models.stylegan2.Generator` uses). The two implementations use
the same run-time scaling, so tensors are copied, only reshaped:

* ``FullyConnectedLayer``: ``weight_gain = lr_multiplier / sqrt(in)``,
  ``bias_gain = lr_multiplier`` -- exactly ``EqualLinear`` (``scale``, ``lr_mul``).
* ``SynthesisLayer``: styles are not scaled and the weight is demodulated; ours
  scales the weight by ``1 / sqrt(in k k)`` before demodulating, which cancels
  (up to where the 1e-8 epsilon sits, a relative 1e-8 effect).
* ``ToRGBLayer``: ``styles = affine(w) / sqrt(in)`` and no demodulation -- ours
  multiplies the same factor into the weight instead: identical product.
* Up-sampling convs: NVIDIA passes ``flip_weight=False``, which
  ``conv2d_resample`` turns into an *unflipped* ``conv_transpose2d`` (stride 2)
  followed by the [1,3,3,1] FIR with padding (1, 1) and gain 4 -- the same as
  rosinality's and ours, so no weight flip is needed.
* Bias + leaky ReLU(0.2) * sqrt(2), then the clamp at ``conv_clamp``; ToRGB adds
  its bias then clamps: as ours with ``StyleGAN2Config.conv_clamp``.

This module only reads; the tests write such pickles with ``tests/checkpoints/nvidia_writer.py``.
"""

from __future__ import annotations

import collections
import hashlib
import io
import math
import pickle
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..models.ops import make_fir_kernel
from ..models.stylegan2 import BLUR_TAPS, Generator, StyleGAN2Config
from .state import generator_from_state, infer_config

__all__ = [
    "EasyDict",
    "NetworkUnpickler",
    "PersistentObject",
    "load_nvidia",
    "read_network_pickle",
]

PERSISTENCE_VERSION = 6  # torch_utils.persistence._version in both NVIDIA repositories


# -- what the unpickler builds instead of NVIDIA's objects ----------------------------------


@dataclass
class PersistentObject:
    """A ``torch_utils.persistence`` object as plain data.

    ``state`` is the pickled ``__dict__`` of the network module (``_parameters``,
    ``_buffers``, ``_modules`` with child PersistentObjects, attributes).
    ``module_src`` is the pickled Python source, kept as text only.
    """

    class_name: str
    state: dict[str, Any]
    module_src: str = ""
    version: int = PERSISTENCE_VERSION

    def _table(self, key: str) -> dict[str, Any]:
        table = self.state.get(key)
        return table if isinstance(table, dict) else {}

    @property
    def parameters(self) -> dict[str, Any]:
        return self._table("_parameters")

    @property
    def buffers(self) -> dict[str, Any]:
        return self._table("_buffers")

    @property
    def modules(self) -> dict[str, Any]:
        return self._table("_modules")

    def child(self, name: str) -> PersistentObject | None:
        child = self.modules.get(name)
        return child if isinstance(child, PersistentObject) else None

    def __repr__(self) -> str:  # the state is large; keep reprs short
        return f"PersistentObject({self.class_name!r}, children={list(self.modules)})"


class EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` (a dict with attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class DisallowedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global that is not on the allowlist."""

    def __init__(self, name: str) -> None:
        super().__init__(f"global {name!r} is not allowed in a network pickle")
        self.name = name


class UnsafeStorage(pickle.UnpicklingError):
    """A tensor storage's embedded torch.save holds more than tensor data."""


def _reconstruct_persistent_obj(meta: Any) -> PersistentObject:
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: never execs."""
    if not isinstance(meta, dict):
        raise pickle.UnpicklingError(
            f"persistent object meta is a {type(meta).__name__}, not a dict"
        )
    if meta.get("type") != "class":
        raise pickle.UnpicklingError(
            f"persistent object of type {meta.get('type')!r}, expected 'class'"
        )
    class_name, state, src = meta.get("class_name"), meta.get("state"), meta.get("module_src", "")
    if not isinstance(class_name, str) or not isinstance(state, dict):
        raise pickle.UnpicklingError("persistent object without a class name and a state dict")
    version = meta.get("version")
    return PersistentObject(
        class_name,
        dict(state),
        src if isinstance(src, str) else "",
        version if isinstance(version, int) else -1,
    )


def _load_from_bytes(data: Any) -> Any:
    """Stand-in for ``torch.storage._load_from_bytes``: the bytes are a legacy ``torch.save``
    of one storage, read with ``weights_only=True`` onto the CPU."""
    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError(f"storage payload is a {type(data).__name__}, not bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        try:
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"GLOBAL ([\w.]+)", str(e))
            raise UnsafeStorage(
                f"it imports {found.group(1)}" if found else str(e).strip()[:200]
            ) from None
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"storage payload holds a {type(storage).__name__}")
    return storage


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: a view of a loaded storage, bounds
    checked (``Tensor.set_`` does not check); hooks and metadata are ignored."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if isinstance(storage, torch.storage.TypedStorage):
            dtype, untyped = storage.dtype, storage._untyped_storage
        elif isinstance(storage, torch.UntypedStorage):
            dtype, untyped = torch.uint8, storage
        else:
            raise pickle.UnpicklingError(f"tensor storage is a {type(storage).__name__}")
    size, stride = tuple(size), tuple(stride)
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise pickle.UnpicklingError(f"invalid tensor geometry size={size} stride={stride}")
    itemsize = torch.empty((), dtype=dtype).element_size()
    if all(size):
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
        if (last + 1) * itemsize > untyped.nbytes():
            raise pickle.UnpicklingError(
                f"tensor of size {list(size)} reaches past the end of its storage"
            )
    return torch.empty((0,), dtype=dtype).set_(untyped, storage_offset, size, stride)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, backward_hooks: Any = None, state: Any = None
) -> torch.Tensor:
    """Stand-in for ``torch._utils._rebuild_parameter(_with_state)``: the plain tensor."""
    if not isinstance(data, torch.Tensor):
        raise pickle.UnpicklingError(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


_np_reconstruct = np.zeros(0).__reduce__()[0]
_np_scalar = np.float64(0).__reduce__()[0]


def _numpy_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError("numpy array of a subclass is not allowed")
    return _np_reconstruct(np.ndarray, shape, dtype)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError("only numeric numpy scalars are allowed")
    return _np_scalar(dtype, data)


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # Protocol-2 pickles write bytes as _codecs.encode(str, "latin1").
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin1 text only")
    return text.encode("latin1")


_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")

#: (module, name) -> the stand-in the unpickler returns. Nothing else resolves.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): EasyDict,
    ("dnnlib", "EasyDict"): EasyDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
    **{(m, "_reconstruct"): _numpy_reconstruct for m in _NUMPY_CORE},
    **{(m, "scalar"): _numpy_scalar for m in _NUMPY_CORE},
}


class NetworkUnpickler(pickle.Unpickler):
    """Resolves only :data:`ALLOWED_GLOBALS`; any other global raises before it can be called."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise DisallowedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(
            f"persistent id {str(pid)[:80]!r}: network pickles do not use persistent ids"
        )


def read_network_pickle(path: str | Path, where: str | None = None) -> Any:
    """The unpickled top-level object, built from allowlisted stand-ins only; ``where`` names
    the file in errors (default: its path)."""
    where = where or str(path)
    try:
        with open(path, "rb") as f:
            return NetworkUnpickler(f).load()
    except DisallowedGlobal as e:
        raise CheckpointError(
            f"{where}: refusing to load: the pickle tried to import {e.name}, which a network "
            f"pickle never needs; nothing from the file was executed (allowed: tensors, plain "
            f"containers, numpy scalars and torch_utils.persistence records)"
        ) from None
    except UnsafeStorage as e:
        raise CheckpointError(
            f"{where}: refusing to load: a tensor storage in the pickle holds more than tensor "
            f"data ({e}; torch's weights-only loader refused it); nothing from the file was "
            f"executed"
        ) from None
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read the file ({e})") from None
    except RecursionError:
        raise CheckpointError(f"{where}: pickle nested too deeply to be a network pickle") from None
    except Exception as e:  # noqa: BLE001 - only our stand-ins ran: any failure means a bad file
        raise CheckpointError(
            f"{where}: not a readable network pickle (truncated or corrupt?): "
            f"{type(e).__name__}: {e}"
        ) from None


# -- G_ema -> our Generator -------------------------------------------------------------------

_BLOCK = re.compile(r"b(\d+)")


def load_nvidia(path: str | Path, where: str | None = None) -> tuple[Generator, dict[str, str]]:
    """Generator from the ``G_ema`` network of an NVIDIA pickle, plus notes on the conversion;
    ``where`` names the file in errors (default: its path)."""
    where = where or str(path)
    data = read_network_pickle(path, where)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{where}: expected a dict network pickle (G, D, G_ema, ...), got {type(data).__name__}"
        )
    if "G_ema" not in data:
        raise CheckpointError(
            f"{where}: no 'G_ema' generator in this pickle (top-level keys: "
            f"{sorted(map(str, data))[:10]}); expected an NVIDIA stylegan2-ada-pytorch or "
            f"stylegan3 network pickle"
        )
    g = data["G_ema"]
    if not isinstance(g, PersistentObject):
        raise CheckpointError(
            f"{where}: 'G_ema' is a {type(g).__name__}, not a torch_utils.persistence network"
        )
    state, cfg, notes = convert_generator(g, where)
    generator, load_notes = generator_from_state(state, where, cfg=cfg)
    return generator, {**notes, **load_notes}


def convert_generator(
    g: PersistentObject, where: str
) -> tuple[dict[str, torch.Tensor], StyleGAN2Config, dict[str, str]]:
    """NVIDIA ``Generator`` record -> (rosinality-layout state, its architecture, notes)."""
    attrs = g.state
    mapping, synthesis = g.child("mapping"), g.child("synthesis")
    if mapping is None or synthesis is None:
        raise CheckpointError(
            f"{where}: G_ema ({g.class_name}) has no mapping/synthesis networks "
            f"(children: {list(g.modules)}); expected a StyleGAN generator"
        )
    c_dim = attrs.get("c_dim", 0)
    if (c_dim is not None and _number(c_dim) != 0) or mapping.child("embed") is not None:
        raise CheckpointError(
            f"{where}: conditional generator (c_dim={c_dim}, label embedding in the mapping) "
            f"is not supported; expected an unconditional StyleGAN2 (c_dim=0)"
        )
    img_channels = attrs.get("img_channels", synthesis.state.get("img_channels", 3))
    if _number(img_channels) != 3:
        raise CheckpointError(
            f"{where}: generator outputs {img_channels} image channels; expected 3 (RGB)"
        )
    names = list(synthesis.modules)
    if "input" in names or any(re.match(r"L\d+_", n) for n in names):
        raise CheckpointError(
            f"{where}: StyleGAN3 (alias-free) synthesis is not a StyleGAN2 architecture "
            f"(synthesis layers {names[:4]}...); expected blocks b4, b8, ... of a StyleGAN2 "
            f"generator (stylegan2-ada-pytorch or stylegan3's networks_stylegan2)"
        )
    blocks = _blocks(synthesis, where)
    w_dim, z_dim = attrs.get("w_dim"), attrs.get("z_dim")
    if None not in (_number(z_dim), _number(w_dim)) and _number(z_dim) != _number(w_dim):
        raise CheckpointError(
            f"{where}: z_dim={z_dim} differs from w_dim={w_dim}; "
            f"this generator needs z_dim == w_dim"
        )

    nv = _flatten(mapping, "mapping.", where)
    nv.update(_flatten(synthesis, "synthesis.", where))
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, tuple[str, Callable[[tuple[int, ...]], tuple[int, ...]]]] = {}
    for key, tensor in nv.items():
        _convert_key(key, tensor, state, origin, where)
    noise_note = _fill_missing_noise(state, blocks)

    cfg_extra = {"lr_mlp": _lr_multiplier(mapping, where), "conv_clamp": _conv_clamp(blocks, where)}
    cfg = infer_config(state, where, **cfg_extra)
    _check_shapes(state, origin, cfg, where)
    notes = {
        "class": f"{_source_module(g.module_src)}.{g.class_name}",
        "module_src_sha256": hashlib.sha256(
            g.module_src.encode("utf-8", "surrogatepass")
        ).hexdigest(),
        "conv_clamp": str(cfg_extra["conv_clamp"]),
        "lr_mlp": str(cfg_extra["lr_mlp"]),
    }
    if noise_note:
        notes["noise"] = noise_note
    fp16 = [r for r, b in blocks.items() if b.state.get("use_fp16")]
    if fp16:
        notes["fp16"] = (
            f"blocks {fp16} ran in FP16 in the original; this generator computes in FP32"
        )
    return state, cfg, notes


def _blocks(synthesis: PersistentObject, where: str) -> dict[int, PersistentObject]:
    blocks: dict[int, PersistentObject] = {}
    for name, block in synthesis.modules.items():
        m = _BLOCK.fullmatch(name)
        if m is None or not isinstance(block, PersistentObject):
            raise CheckpointError(
                f"{where}: unexpected synthesis layer {name!r}; "
                f"expected StyleGAN2 blocks b4, b8, ..."
            )
        res = int(m.group(1))
        arch = block.state.get("architecture", "skip")
        if arch != "skip" or block.child("skip") is not None:
            raise CheckpointError(
                f"{where}: synthesis block {name} uses the {arch!r} architecture; only config-f's "
                f"'skip' generator (a ToRGB per block, summed) is supported"
            )
        if block.child("torgb") is None:
            raise CheckpointError(
                f"{where}: synthesis block {name} has no torgb layer ('orig' architecture); "
                f"only config-f's 'skip' generator is supported"
            )
        blocks[res] = block
    expected = [2**i for i in range(2, 2 + len(blocks))]
    if sorted(blocks) != expected:
        raise CheckpointError(
            f"{where}: synthesis blocks {sorted(blocks)}; "
            f"expected consecutive resolutions {expected}"
        )
    return blocks


def _flatten(obj: PersistentObject, prefix: str, where: str) -> dict[str, torch.Tensor]:
    """Parameters and buffers of a persistent module tree as ``prefix + dotted.name``."""
    out: dict[str, torch.Tensor] = {}
    for table in (obj.parameters, obj.buffers):
        for name, tensor in table.items():
            if tensor is None:  # e.g. a layer built with bias=False
                continue
            if not isinstance(tensor, torch.Tensor):
                raise CheckpointError(
                    f"{where}: G_ema.{prefix}{name} is a {type(tensor).__name__}, not a tensor"
                )
            out[f"{prefix}{name}"] = tensor
    for name, child in obj.modules.items():
        if child is None:
            continue
        if not isinstance(child, PersistentObject):
            raise CheckpointError(
                f"{where}: G_ema.{prefix}{name} is a {type(child).__name__}, "
                f"not a torch_utils.persistence module"
            )
        out.update(_flatten(child, f"{prefix}{name}.", where))
    return out


def _layer_prefix(res: int, conv: str) -> tuple[str, int] | None:
    """(our module prefix, noise index) of NVIDIA's synthesis.b{res}.{conv0|conv1}."""
    if res == 4:
        return ("conv1", 0) if conv == "conv1" else None
    k = int(math.log2(res)) - 3
    return (f"convs.{2 * k}", 2 * k + 1) if conv == "conv0" else (f"convs.{2 * k + 1}", 2 * k + 2)


_Shape = tuple[int, ...]


def _same(shape: _Shape) -> _Shape:
    return shape


def _convert_key(
    key: str,
    t: torch.Tensor,
    out: dict[str, torch.Tensor],
    origin: dict[str, tuple[str, Callable[[_Shape], _Shape]]],
    where: str,
) -> None:
    """Store NVIDIA tensor ``key`` under our name; ``origin`` remembers the NVIDIA key and how
    to turn our expected shape back into NVIDIA's (for error messages)."""

    def need(ndim: int, what: str) -> None:
        if t.ndim != ndim:
            raise CheckpointError(
                f"{where}: G_ema.{key} has shape {list(t.shape)}, expected {what}"
            )

    def put(ours: str, value: torch.Tensor, back: Callable[[_Shape], _Shape] = _same) -> None:
        out[ours] = value
        origin[ours] = (key, back)

    def drop_lead(shape: _Shape) -> _Shape:
        return shape[1:]

    if m := re.fullmatch(r"mapping\.fc(\d+)\.(weight|bias)", key):
        return put(f"style.{int(m.group(1)) + 1}.{m.group(2)}", t)
    if key == "mapping.w_avg":
        return put("w_avg", t)
    m = re.fullmatch(r"synthesis\.b(\d+)\.(.+)", key)
    if m is None:
        raise CheckpointError(f"{where}: unexpected tensor G_ema.{key} in a StyleGAN2 generator")
    res, rest = int(m.group(1)), m.group(2)
    if rest == "const" and res == 4:
        need(3, "[channels, 4, 4]")
        return put("input.input", t.unsqueeze(0), drop_lead)
    if rest == "resample_filter" or rest.endswith(".resample_filter"):
        return _check_filter(key, t, where)
    if m := re.fullmatch(r"(conv0|conv1)\.(.+)", rest):
        layer = _layer_prefix(res, m.group(1))
        if layer is not None:
            prefix, noise = layer
            name = m.group(2)
            if name == "weight":
                need(4, "[out, in, 3, 3]")
                return put(f"{prefix}.conv.weight", t.unsqueeze(0), drop_lead)
            if name in ("affine.weight", "affine.bias"):
                return put(f"{prefix}.conv.modulation.{name.split('.')[1]}", t)
            if name == "bias":
                return put(f"{prefix}.activate.bias", t)
            if name == "noise_strength":
                if t.numel() != 1:
                    need(0, "a scalar")
                return put(f"{prefix}.noise.weight", t.reshape(1), lambda s: ())
            if name == "noise_const":
                need(2, f"[{res}, {res}]")
                return put(f"noises.noise_{noise}", t.reshape(1, 1, *t.shape), lambda s: s[2:])
    if m := re.fullmatch(r"torgb\.(.+)", rest):
        prefix = "to_rgb1" if res == 4 else f"to_rgbs.{int(math.log2(res)) - 3}"
        name = m.group(1)
        if name == "weight":
            need(4, "[3, in, 1, 1]")
            return put(f"{prefix}.conv.weight", t.unsqueeze(0), drop_lead)
        if name in ("affine.weight", "affine.bias"):
            return put(f"{prefix}.conv.modulation.{name.split('.')[1]}", t)
        if name == "bias":
            need(1, "[3]")
            return put(f"{prefix}.bias", t.reshape(1, -1, 1, 1), lambda s: (s[1],))
    raise CheckpointError(f"{where}: unexpected tensor G_ema.{key} in a StyleGAN2 generator")


def _check_filter(key: str, t: torch.Tensor, where: str) -> None:
    expected = make_fir_kernel(BLUR_TAPS)
    if t.shape != expected.shape or not torch.allclose(
        t.float() / t.float().sum(), expected, atol=1e-6
    ):
        raise CheckpointError(
            f"{where}: G_ema.{key} is not the [1,3,3,1] resampling filter this generator supports"
        )


def _fill_missing_noise(state: dict[str, torch.Tensor], blocks: dict[int, PersistentObject]) -> str:
    """Layers built with use_noise=False have no noise tensors: zero strength is the same net."""
    missing = []
    for res in blocks:
        for conv in ("conv0", "conv1"):
            layer = _layer_prefix(res, conv)
            if layer is None:
                continue
            prefix, noise = layer
            if f"{prefix}.noise.weight" not in state and f"noises.noise_{noise}" not in state:
                state[f"{prefix}.noise.weight"] = torch.zeros(1)
                state[f"noises.noise_{noise}"] = torch.zeros(1, 1, res, res)
                missing.append(f"b{res}.{conv}")
    return f"no noise inputs in {missing} (use_noise=False): strength set to 0" if missing else ""


def _number(v: Any) -> float | None:
    if isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
        return float(v)
    return None


def _lr_multiplier(mapping: PersistentObject, where: str) -> float:
    """NVIDIA stores lr_multiplier as each mapping layer's bias_gain (= EqualLinear's lr_mul)."""
    gains = []
    for name, fc in mapping.modules.items():
        if not re.fullmatch(r"fc\d+", name) or not isinstance(fc, PersistentObject):
            continue
        if fc.state.get("activation", "lrelu") != "lrelu":
            raise CheckpointError(
                f"{where}: mapping.{name} uses activation {fc.state.get('activation')!r}; "
                f"expected 'lrelu'"
            )
        gain = _number(fc.state.get("bias_gain"))
        if gain is not None:
            gains.append(gain)
    if not gains:
        init = mapping.state.get("_init_kwargs")
        gain = _number(init.get("lr_multiplier")) if isinstance(init, dict) else None
        return gain if gain is not None else 0.01  # MappingNetwork's default
    if max(gains) - min(gains) > 1e-9 * max(abs(g) for g in gains) or gains[0] <= 0:
        raise CheckpointError(
            f"{where}: mapping layers have different learning-rate multipliers {gains}; "
            f"expected one lr_multiplier for the whole mapping network"
        )
    return gains[0]


def _conv_clamp(blocks: dict[int, PersistentObject], where: str) -> float | None:
    """The synthesis layers' conv_clamp (ada configs: 256; None = no clamping)."""
    clamps = {}
    for res, block in blocks.items():
        for name in ("conv0", "conv1", "torgb"):
            layer = block.child(name)
            if layer is not None and "conv_clamp" in layer.state:
                v = layer.state["conv_clamp"]
                if v is not None and _number(v) is None:
                    raise CheckpointError(
                        f"{where}: G_ema.synthesis.b{res}.{name}.conv_clamp is {v!r}, "
                        f"expected a number or None"
                    )
                clamps[f"b{res}.{name}"] = None if v is None else _number(v)
    values = set(clamps.values())
    if len(values) > 1:
        raise CheckpointError(
            f"{where}: synthesis layers use different conv_clamp values {clamps}; "
            f"expected one for the whole network"
        )
    value = values.pop() if values else None
    if value is not None and value <= 0:
        raise CheckpointError(f"{where}: conv_clamp {value} is not positive")
    return value


def _check_shapes(
    state: dict[str, torch.Tensor],
    origin: dict[str, tuple[str, Callable[[_Shape], _Shape]]],
    cfg: StyleGAN2Config,
    where: str,
) -> None:
    """Every tensor's shape against the inferred architecture, reported with NVIDIA's key."""
    with torch.device("meta"):
        expected = Generator(cfg).state_dict()
    for key, tensor in state.items():
        if key not in expected or tensor.shape == expected[key].shape:
            continue  # unknown keys are reported by generator_from_state
        nv_key, back = origin.get(key, (key, _same))
        raise CheckpointError(
            f"{where}: G_ema.{nv_key} has shape {list(back(tuple(tensor.shape)))}, expected "
            f"{list(back(tuple(expected[key].shape)))} for the architecture inferred from the "
            f"other tensors ({cfg.resolution}x{cfg.resolution}, style_dim {cfg.style_dim}, "
            f"channels {cfg.channels})"
        )


def _source_module(src: str) -> str:
    """Which NVIDIA module the pickled source is (for notes only; it is never run)."""
    if "class SynthesisInput" in src:
        return "training.networks_stylegan3"
    if "Analyzing and Improving the Image Quality of StyleGAN" in src:
        return "training.networks_stylegan2"
    if "class SynthesisBlock" in src:
        return "training.networks"
    return "<pickled module>"
