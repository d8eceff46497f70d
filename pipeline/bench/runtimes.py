"""The runtimes a :class:`~pipeline.bench.targets.Target` is timed in, one adapter each:
``pytorch`` (eager), ``onnxruntime`` (the ``export_onnx`` file in one session) and
``executorch`` (the ``export_pte`` XNNPACK program, batch 1). :func:`open_runtime` builds
one (exporting the network where the runtime needs a file); it raises when the runtime is
not installed or the network does not export to it."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .targets import Target
from .timing import BenchError

RUNTIMES: tuple[str, ...] = ("pytorch", "onnxruntime", "executorch")
OPSET = 18


class _PyTorch:
    name = "pytorch"

    def __init__(self, target: Target, workdir: Path, device: str, threads: int, opset: int):
        self.net, self.device, self.on = target.net.to(device), device, device
        self.where = f"torch eager ({device})"

    def runner(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        x = x.to(self.device)

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return self.net(x)

        return run

    def close(self) -> None:
        self.net.cpu()


class _OnnxRuntime:
    """The network written by ``export_onnx`` (dynamic batch) in one session."""

    name = "onnxruntime"

    def __init__(self, target: Target, workdir: Path, device: str, threads: int, opset: int):
        import onnxruntime as ort

        from ..export.formats import export_onnx

        self.options = ort.SessionOptions()
        self.options.intra_op_num_threads = threads
        self.options.inter_op_num_threads = 1
        self.options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.options.log_severity_level = 3
        self.providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            self.providers.insert(0, "CUDAExecutionProvider")
        self.on = device if "CUDAExecutionProvider" in self.providers else "cpu"
        self.where = f"onnxruntime {'+'.join(p.removesuffix('ExecutionProvider') for p in self.providers)}"
        self.path = workdir / f"{target.arch}.onnx"
        export_onnx(target.net, self.path, False, opset)
        self.session = ort.InferenceSession(str(self.path), self.options, providers=self.providers)

    def runner(self, x: torch.Tensor) -> Callable[[], Any]:
        session = self.session
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: torch.from_numpy(np.asarray(session.run(None, feed)[0]))

    def close(self) -> None:
        self.session = None


class _ExecuTorch:
    """The XNNPACK ``.pte`` program, batch 1 (as ``export_pte`` writes it)."""

    name = "executorch"

    def __init__(self, target: Target, workdir: Path, device: str, threads: int, opset: int):
        from ..export.formats import export_pte, unavailable

        why = unavailable("pte")
        if why:
            raise BenchError(why)
        from executorch.runtime import Runtime

        path = workdir / f"{target.arch}.pte"
        facts = export_pte(target.net, path, False)
        self.outside = facts.get("ops_outside_delegate", [])
        self.on = "cpu"
        self.method = Runtime.get().load_program(str(path)).load_method("forward")
        names = sorted({m.group(1) if (m := re.search(r"aten::(\w+)", op)) else op
                        for op in self.outside})
        self.where = "executorch XNNPACK (cpu)" + (
            f"; outside the delegate: {', '.join(names)}" if names else "")

    def runner(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        if x.shape[0] != 1:
            raise BenchError("the .pte program is exported for batch 1 (pipeline.export.formats."
                             "export_pte): batch > 1 is not measured")
        x = x.contiguous()
        return lambda: self.method.execute([x])[0]

    def close(self) -> None:
        self.method = None


_RUNTIME_CLASSES = {"pytorch": _PyTorch, "onnxruntime": _OnnxRuntime, "executorch": _ExecuTorch}


def open_runtime(name: str, target: Target, workdir: Path, device: str, threads: int,
                 opset: int = OPSET) -> Any:
    """The ``name`` adapter for ``target`` (its files written under ``workdir``), warnings
    silenced: ``.on`` (the device it runs on), ``.where`` (a description), ``.runner(x)``
    (a call to time) and ``.close()``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _RUNTIME_CLASSES[name](target, workdir, device, threads, opset)


def check_runtimes(runtimes: Sequence[str] | str) -> list[str]:
    if isinstance(runtimes, str):
        runtimes = [r.strip() for r in runtimes.split(",") if r.strip()]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise BenchError(f"unknown runtime {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(RUNTIMES)}")
    return list(dict.fromkeys(runtimes))


