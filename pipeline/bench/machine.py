"""The machine: CPU model and cores, runtime versions (:func:`machine_info`), and its
measured fp32 matrix-multiply peak (:func:`peak_gmacs`), the yardstick of efficiency."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .timing import measure, using_threads


def _cpuinfo() -> tuple[str | None, int | None]:
    """(CPU model name, physical cores) from /proc/cpuinfo, where there is one."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, None
    model, cores, phys, core = None, set(), None, None
    for line in text.splitlines() + [""]:
        key, _, value = (s.strip() for s in line.partition(":"))
        if key == "model name" and model is None:
            model = value
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not key:  # end of a processor block
            if core is not None:
                cores.add((phys, core))
            phys = core = None
    return model, len(cores) or None


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, torch threads, onnxruntime/executorch versions, GPU when used."""
    model, physical = _cpuinfo()
    logical = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = logical
    info: dict[str, Any] = {
        "cpu": model or platform.processor() or platform.machine() or "unknown",
        "physical_cores": physical or logical, "logical_cores": logical, "usable_cores": usable,
        "platform": platform.platform(), "python": platform.python_version(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "onnxruntime": None, "onnxruntime_providers": [], "executorch": None, "gpu": None,
    }
    try:
        import onnxruntime as ort

        info["onnxruntime"] = ort.__version__
        info["onnxruntime_providers"] = list(ort.get_available_providers())
    except Exception:  # not installed, or its native library does not load
        pass
    with contextlib.suppress(Exception):
        from executorch.version import __version__ as et_version

        info["executorch"] = et_version
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def machine_text(info: Mapping[str, Any]) -> str:
    """One line for tables and reports."""
    text = (f"{info['cpu']}, {info['physical_cores']} physical / {info['logical_cores']} logical "
            f"cores ({info['usable_cores']} usable); torch {info['torch']}")
    if info.get("onnxruntime"):
        text += f"; onnxruntime {info['onnxruntime']} ({', '.join(info['onnxruntime_providers'])})"
    if info.get("executorch"):
        text += f"; executorch {info['executorch']}"
    if info.get("gpu"):
        text += f"; GPU {info['gpu']}"
    return text


def matmul_rates(device: str = "cpu", threads: int | None = None, n: int | None = None,
                 warmup: int = 2, repeats: int = 5) -> dict[str, float]:
    """GMAC/s (n^3 / t, t the fastest of ``repeats`` after ``warmup``) of an n x n fp32
    matrix multiply by each implementation torch has here: ``mm`` (BLAS: MKL/OpenBLAS on
    CPU, cuBLAS on GPU) and, on CPU, ``onednn`` (oneDNN's inner product, the library torch's
    convolutions use; MKL takes its AVX2 path on AMD CPUs and can be half as fast)."""
    n = n or (8192 if str(device).startswith("cuda") else 2048)
    rates: dict[str, float] = {}
    with using_threads(threads), torch.inference_mode():
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(device)
        b = torch.randn(n, n, generator=g).to(device)
        out = torch.empty(n, n, device=device)
        t = measure(lambda: torch.mm(a, b, out=out), warmup, repeats, device)
        rates["mm"] = n**3 / (t["min_ms"] / 1e3) / 1e9
        if not str(device).startswith("cuda") and torch.backends.mkldnn.is_available():
            try:
                a_dnn = a.to_mkldnn()
                t = measure(lambda: torch._C._nn.mkldnn_linear(a_dnn, b), warmup, repeats)
                rates["onednn"] = n**3 / (t["min_ms"] / 1e3) / 1e9
            except Exception:  # a build without it
                pass
    return rates


def peak_gmacs(device: str = "cpu", threads: int | None = None, n: int | None = None,
               warmup: int = 2, repeats: int = 5) -> float:
    """The machine's measured fp32 matrix-multiply peak in GMAC/s with ``threads`` threads:
    the fastest implementation of :func:`matmul_rates`."""
    return max(matmul_rates(device, threads, n, warmup, repeats).values())
