"""The runtimes a :class:`~pipeline.bench.targets.Target` is timed in, one adapter each:
``pytorch`` (eager), ``onnxruntime`` (the ``export_onnx`` file in one session) and
``executorch`` (the ``export_pte`` XNNPACK program, batch 1), the int8 versions of
the two files (``onnxruntime-int8``, ``executorch-int8``: pipeline.export.quantize,
calibrated on the target's calibration inputs) and the half-precision program
(``executorch-fp16``: the export stage's fp16 variant). :func:`open_runtime` builds
one (exporting the network where the runtime needs a file); it raises when the runtime is
not installed or the network does not export to it. Each adapter times calls
(``runner``) and profiles them with the runtime's own profiler (``profile``)."""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .targets import Target
from .timing import BenchError

RUNTIMES: tuple[str, ...] = ("pytorch", "onnxruntime", "executorch")  # fp32: the default set
INT8_RUNTIMES: tuple[str, ...] = ("onnxruntime-int8", "executorch-int8")  # static int8 of the same file
FP16_RUNTIMES: tuple[str, ...] = ("executorch-fp16",)  # the same network in half precision
# Not timed against the fp32 matmul peak, not in the 1024 ratio (which compares fp32 graphs).
REDUCED_PRECISION: tuple[str, ...] = INT8_RUNTIMES + FP16_RUNTIMES
OPSET = 18


@dataclass
class OpTimes:
    """A runtime's own profile of ``runs`` calls: operator type -> [ms, calls] over all of
    them, and the calls' total ms (operators plus what no operator accounts for)."""

    ops: dict[str, list[float]]
    total_ms: float
    runs: int


Written = tuple[Path, dict[str, Any]]  # a runtime's file and what writing it found


class _PyTorch:
    name = "pytorch"

    @staticmethod
    def write(target: Target, workdir: Path, opset: int) -> Written | None:
        return None  # eager: no file

    def __init__(self, target: Target, workdir: Path, device: str, threads: int, opset: int,
                 written: Written | None = None):
        self.net, self.device, self.on = target.net.to(device), device, device
        self.where = f"torch eager ({device})"

    def runner(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        x = x.to(self.device)

        def run() -> torch.Tensor:
            with torch.inference_mode():
                return self.net(x)

        return run

    def profile(self, x: torch.Tensor, runs: int) -> OpTimes:
        """``torch.profiler``: each aten operator's self time (its children excluded, so
        nothing is counted twice); the total is the wall time of the profiled calls."""
        from torch.profiler import ProfilerActivity, profile

        run = self.runner(x)
        run()  # warm-up, not profiled
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.on != "cpu" else [])
        with profile(activities=activities) as prof:
            start = time.perf_counter()
            for _ in range(runs):
                run()
            if self.on != "cpu":
                torch.cuda.synchronize()
            total = (time.perf_counter() - start) * 1e3
        ops: dict[str, list[float]] = {}
        for event in prof.key_averages():
            self_us = event.self_device_time_total if self.on != "cpu" else event.self_cpu_time_total
            if self_us > 0:
                ops[event.key] = [self_us / 1e3, event.count]
        return OpTimes(ops, total, runs)

    def close(self) -> None:
        self.net.cpu()


class _OnnxRuntime:
    """The network written by ``export_onnx`` (dynamic batch) in one session."""

    name = "onnxruntime"

    @classmethod
    def write(cls, target: Target, workdir: Path, opset: int) -> Written:
        from ..export.formats import export_onnx

        path = workdir / f"{target.arch}.onnx"
        export_onnx(target.net, path, False, opset)
        return cls._quantized(target, path), {}

    def __init__(self, target: Target, workdir: Path, device: str, threads: int, opset: int,
                 written: Written | None = None):
        import onnxruntime as ort

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
        self.path, _ = written or self.write(target, workdir, opset)
        self.session = ort.InferenceSession(str(self.path), self.options, providers=self.providers)

    @staticmethod
    def _quantized(target: Target, path: Path) -> Path:  # fp32: the file as written
        return path

    def runner(self, x: torch.Tensor) -> Callable[[], Any]:
        session = self.session
        feed = {session.get_inputs()[0].name: x.numpy()}
        return lambda: torch.from_numpy(np.asarray(session.run(None, feed)[0]))

    def profile(self, x: torch.Tensor, runs: int) -> OpTimes:
        """ONNX Runtime's session profiling (a second session on the same file, same
        options): each node's kernel time by operator type of the optimised graph (fused
        ``FusedConv``, layout ``ReorderInput``...); the total is the runs' ``model_run``."""
        import onnxruntime as ort

        self.options.enable_profiling = True
        self.options.profile_file_prefix = str(self.path.with_suffix(""))
        try:
            session = ort.InferenceSession(str(self.path), self.options, providers=self.providers)
        finally:
            self.options.enable_profiling = False
        feed = {session.get_inputs()[0].name: x.numpy()}
        for _ in range(runs + 1):  # the first run warms up and is left out
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
        model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
        after = model_runs[0]["ts"] + model_runs[0]["dur"]
        ops: dict[str, list[float]] = {}
        for e in events:
            if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= after:
                entry = ops.setdefault(e["args"]["op_name"], [0.0, 0])
                entry[0] += e["dur"] / 1e3
                entry[1] += 1
        return OpTimes(ops, sum(e["dur"] for e in model_runs[1:]) / 1e3, runs)

    def close(self) -> None:
        self.session = None


class _ExecuTorch:
    """The XNNPACK ``.pte`` program, batch 1 (as ``export_pte`` writes it)."""

    name = "executorch"

    @classmethod
    def write(cls, target: Target, workdir: Path, opset: int) -> Written:
        from ..export.formats import unavailable

        if why := unavailable("pte"):
            raise BenchError(why)
        path = workdir / f"{target.arch}{cls.suffix}"
        return path, cls._write(target, path)

    def __init__(self, target: Target, workdir: Path, device: str, threads: int, opset: int,
                 written: Written | None = None):
        from executorch.runtime import Runtime

        self.path, facts = written or self.write(target, workdir, opset)
        self.outside = facts.get("ops_outside_delegate", [])
        self.on = "cpu"
        self.method = Runtime.get().load_program(str(self.path)).load_method("forward")
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

    def profile(self, x: torch.Tensor, runs: int) -> OpTimes:
        """ExecuTorch's ETDump read by the devtools Inspector: XNNPACK's per-operator
        events (``Convolution (NHWC, F32) IGEMM``...) and operators outside the delegate;
        the total is ``Method::execute``."""
        from executorch.devtools import Inspector
        from executorch.extension.pybindings.portable_lib import _load_for_executorch

        self.runner(x)  # refuses batch > 1, as for timing
        module = _load_for_executorch(str(self.path), enable_etdump=True)
        for _ in range(runs + 1):  # the first run warms up and is left out
            module.run_method("forward", [x.contiguous()])
        dump = self.path.with_suffix(".etdump")
        module.write_etdump_result_to_file(str(dump))
        ops: dict[str, list[float]] = {}
        total = 0.0
        for block in Inspector(etdump_path=str(dump)).event_blocks:
            for event in block.events:
                times = event.perf_data.raw[1:] if event.perf_data else []
                if event.name == "Method::execute":
                    total += sum(times)
                elif times and event.name not in _ET_ENVELOPES:
                    entry = ops.setdefault(re.sub(r" #\d+$", "", event.name), [0.0, 0])
                    entry[0] += sum(times)
                    entry[1] += len(times)
        return OpTimes(ops, total, runs)

    suffix = ".pte"

    @staticmethod
    def _write(target: Target, path: Path) -> dict[str, Any]:
        from ..export.formats import export_pte

        return export_pte(target.net, path, False)

    def close(self) -> None:
        self.method = None


class _OnnxRuntimeInt8(_OnnxRuntime):
    """The ONNX file quantized to int8 QDQ (pipeline.export.quantize), calibrated on the
    target's calibration inputs; the same session settings."""

    name = "onnxruntime-int8"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.where += " int8 (QDQ)"

    @staticmethod
    def _quantized(target: Target, path: Path) -> Path:
        from ..export.quantize import quantize_onnx, unavailable

        if why := unavailable("onnx"):
            raise BenchError(why)
        out = path.with_suffix(".int8.onnx")
        quantize_onnx(path, out, target.calibration_inputs(), target.net.kind)
        return out


class _ExecuTorchInt8(_ExecuTorch):
    """The XNNPACK program quantized to int8 by PT2E (pipeline.export.quantize)."""

    name = "executorch-int8"
    suffix = ".int8.pte"

    @staticmethod
    def _write(target: Target, path: Path) -> dict[str, Any]:
        from ..export.quantize import quantize_pte, unavailable

        if why := unavailable("pte"):
            raise BenchError(why)
        return quantize_pte(target.net, path, target.calibration_inputs())


class _ExecuTorchFp16(_ExecuTorch):
    """The half-precision XNNPACK program (``export_pte(fp16=True)``, the export stage's
    fp16 variant): float16 input and output, fed the same W+ cast to float16. XNNPACK
    computes in fp16 where the CPU has fp16 arithmetic (ARMv8.2+ phones, x86 with
    AVX512-FP16) and converts to fp32 elsewhere."""

    name = "executorch-fp16"
    suffix = ".fp16.pte"

    @staticmethod
    def _write(target: Target, path: Path) -> dict[str, Any]:
        from ..export.formats import export_pte

        return export_pte(target.net, path, True)

    def runner(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        return super().runner(x.half())

    def profile(self, x: torch.Tensor, runs: int) -> OpTimes:
        return super().profile(x.half(), runs)


# ETDump events that enclose others (the delegate's operators, the whole method)
_ET_ENVELOPES = ("DELEGATE_CALL", "Method::execute", "Method::init", "Program::load_method")


_RUNTIME_CLASSES = {"pytorch": _PyTorch, "onnxruntime": _OnnxRuntime, "executorch": _ExecuTorch,
                    "onnxruntime-int8": _OnnxRuntimeInt8, "executorch-int8": _ExecuTorchInt8,
                    "executorch-fp16": _ExecuTorchFp16}


def open_runtime(name: str, target: Target, workdir: Path, device: str, threads: int,
                 opset: int = OPSET, written: Written | None = None) -> Any:
    """The ``name`` adapter for ``target`` (its file written under ``workdir``, unless
    :func:`write_files` wrote it: ``written``), warnings silenced: ``.on`` (the device it
    runs on), ``.where`` (a description), ``.runner(x)`` (a call to time) and ``.close()``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _RUNTIME_CLASSES[name](target, workdir, device, threads, opset, written)


def write_files(target: Target, runtimes: Sequence[str], workdir: Path,
                opset: int = OPSET) -> dict[str, Written | str | None]:
    """The file of ``target`` that each of ``runtimes`` runs, written under ``workdir`` in
    order (the int8 ONNX file after the fp32 one it quantizes): runtime -> (path, facts),
    None (no file: eager) or why it could not be written. A module-level function, so a
    worker process can write one model's files (pipeline.workers)."""
    out: dict[str, Written | str | None] = {}
    workdir.mkdir(parents=True, exist_ok=True)
    for rt in runtimes:
        try:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                out[rt] = _RUNTIME_CLASSES[rt].write(target, workdir, opset)
        except Exception as e:  # not installed, or the model does not export to it
            out[rt] = reason(e)
    return out


def reason(e: BaseException) -> str:
    """The first line of an error, for a result's ``skipped``."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


def check_runtimes(runtimes: Sequence[str] | str) -> list[str]:
    if isinstance(runtimes, str):
        runtimes = [r.strip() for r in runtimes.split(",") if r.strip()]
    unknown = [r for r in runtimes if r not in _RUNTIME_CLASSES]
    if unknown or not runtimes:
        raise BenchError(f"unknown runtime {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(RUNTIMES + REDUCED_PRECISION)}")
    return list(dict.fromkeys(runtimes))


