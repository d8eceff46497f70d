"""Latency of synthesis networks in real runtimes, side by side in one process.

Every model is timed as one network, W+ in ([B, n_latent, style_dim], the teacher's
layout) and image out, with the teacher's fixed noise baked in:

* teacher: :class:`TeacherGraph`, ``Generator.synthesis`` with its ``noise_mode="const"``
  maps baked in, written with constant weights (modulation on the activations,
  demodulation energies precomputed; the same image to float rounding): the training
  module folds the batch into grouped convolutions with per-sample weights, which the
  TorchScript ONNX exporter rejects and XNNPACK does not delegate;
* student: its inference graph, :func:`pipeline.export.graph.build` (fused demodulation
  folded, last head only, constants precomputed; output range (-1, 1)), the very network
  the export stage writes: ONNX through ``export_onnx`` (dynamic batch), ExecuTorch through
  ``export_pte`` (XNNPACK, batch 1).

Runtimes (one thread count for all of them, so the comparison is fair):

* ``pytorch``: eager, ``torch.inference_mode``, ``torch.set_num_threads``;
* ``onnxruntime``: the CPU execution provider (CUDA's when ``device="cuda"`` and
  onnxruntime has it), ``intra_op_num_threads``, full graph optimisation;
* ``executorch``: the ``.pte`` file in ``executorch.runtime`` (XNNPACK thread pool set to
  the same count), batch 1 only (the program is exported for batch 1).

A runtime that is not installed, or a model that does not export or run in it, is not
an error: the reason is recorded under ``skipped`` and the other figures are still
measured. Outputs of ONNX Runtime and ExecuTorch are compared with PyTorch's on the
timed input (``parity``: max abs difference).

Figures: median / p90 / mean / min of ``repeats`` timed calls after ``warmup`` calls
(``time.perf_counter``, CUDA synchronised), achieved GMAC/s = physical MACs of the
network (:func:`pipeline.cost.count`, ``macs``) x batch / median, and efficiency =
achieved / the machine's peak, a large fp32 matrix multiply measured in the same process
with the same threads (:func:`peak_gmacs`).

:func:`latency_ratio_1024`: the headline ratio, a config-f teacher (random weights:
speed only) against its default MobileStyleGAN student, batch 1, same run and threads.

``python -m pipeline.bench --help``: the same table for checkpoints or config-f pairs.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import cost
from .errors import PipelineError
from .models.mobile import MobileSynthesis, StudentConfig, calibrate_demodulation
from .models.ops import fused_leaky_relu
from .models.stylegan2 import (
    Generator,
    ModulatedConv2d,
    StyledConv,
    StyleGAN2Config,
    ToRGB,
    random_generator,
)

RUNTIMES: tuple[str, ...] = ("pytorch", "onnxruntime", "executorch")
MOBILESTYLEGAN_MAC_RATIO = 9.5  # the paper's teacher/student MAC ratio at 1024
RANDOM_WEIGHTS = "random (speed only)"
OPSET = 18


class BenchError(PipelineError):
    """Bad benchmark arguments (unknown runtime, impossible batch, missing file)."""


# -- the machine --------------------------------------------------------------------------
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


def _sync(device: str) -> Callable[[], None]:
    if str(device).startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


# -- the harness --------------------------------------------------------------------------
def measure(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10,
            device: str = "cpu") -> dict[str, float]:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones, each on its own
    (``time.perf_counter``; CUDA synchronised before and after each call on a GPU)."""
    if warmup < 0 or repeats < 1:
        raise BenchError(f"warmup must be >= 0 and repeats >= 1, got {warmup}, {repeats}")
    sync = _sync(device)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
            "mean_ms": float(t.mean()), "min_ms": float(t.min()), "repeats": repeats}


def matmul_rates(device: str = "cpu", threads: int | None = None, n: int | None = None,
                 warmup: int = 2, repeats: int = 5) -> dict[str, float]:
    """GMAC/s (n^3 / t, t the fastest of ``repeats`` after ``warmup``) of an n x n fp32
    matrix multiply by each implementation torch has here: ``mm`` (BLAS: MKL/OpenBLAS on
    CPU, cuBLAS on GPU) and, on CPU, ``onednn`` (oneDNN's inner product, the library torch's
    convolutions use; MKL takes its AVX2 path on AMD CPUs and can be half as fast)."""
    n = n or (8192 if str(device).startswith("cuda") else 2048)
    rates: dict[str, float] = {}
    with _threads(threads), torch.inference_mode():
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


@contextlib.contextmanager
def _threads(threads: int | None, executorch: bool = False) -> Iterator[int]:
    """torch's intra-op threads (and ExecuTorch's pool) set to ``threads`` for the block."""
    old = torch.get_num_threads()
    n = threads or old
    torch.set_num_threads(n)
    et = _executorch_threads(n) if executorch else None
    try:
        yield n
    finally:
        torch.set_num_threads(old)
        if et is not None:
            _executorch_threads(et)


def _executorch_threads(n: int) -> int | None:
    """Set ExecuTorch's CPU thread pool to ``n``; returns the previous size (None: no pool)."""
    try:
        from executorch.extension.pybindings import portable_lib
    except Exception:
        return None
    try:
        old = portable_lib._threadpool_get_thread_count()
        if old != n:
            portable_lib._unsafe_reset_threadpool(n)
        return old
    except Exception:
        return None


# -- what is timed ------------------------------------------------------------------------
def _const(t: torch.Tensor) -> nn.Parameter:
    """A frozen constant of a graph (folded in float64, stored in float32)."""
    return nn.Parameter(t.detach().double().float().clone(), requires_grad=False)


def _fir(kernel: torch.Tensor, channels: int) -> nn.Parameter:
    """A 2-D FIR kernel as a constant depthwise conv weight [C, 1, k, k], flipped (conv2d
    correlates; upfirdn2d convolves)."""
    k = torch.flip(kernel.detach().cpu().double(), [0, 1])
    return _const(k[None, None].repeat(channels, 1, 1, 1))


class _ModConv(nn.Module):
    """The teacher's modulated conv in NVIDIA's ``fused_modconv=False`` form, exactly equal
    to its weight-modulating form: s is per input channel and 1/sigma per output channel, so
    conv(x, scale W s / sigma) = conv(x * s, scale W) / sigma(s), with
    sigma_j(s) = sqrt(sum_i s_i^2 E_ji + 1e-8), E_ji = sum_k (scale W_jik)^2 precomputed.
    The weight is then a constant: no per-sample weights, no batch folded into the groups."""

    def __init__(self, conv: ModulatedConv2d) -> None:
        super().__init__()
        lin = conv.modulation
        self.affine_weight = _const(lin.weight.double() * lin.scale)
        self.affine_bias = _const(lin.bias.double() * lin.lr_mul)
        weight = conv.weight[0].double() * conv.scale  # [out, in, k, k]
        self.upsample, self.padding = conv.upsample, conv.kernel_size // 2
        # conv_transpose2d reads [in, out, k, k]
        self.weight = _const(weight.transpose(0, 1) if conv.upsample else weight)
        self.energy = _const(weight.pow(2).sum([2, 3])) if conv.demodulate else None
        if conv.upsample:  # the [1,3,3,1] FIR after the stride-2 transposed conv (2H+1 -> 2H)
            if conv.blur.pad != (1, 1):
                raise ValueError(f"unexpected blur padding {conv.blur.pad}")
            self.blur = _fir(conv.blur.kernel, weight.shape[0])

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = F.linear(w, self.affine_weight, self.affine_bias).flatten(1)  # [B, in]
        x = x * s[:, :, None, None]
        if self.upsample:
            x = F.conv_transpose2d(x, self.weight, stride=2)
            x = F.conv2d(x, self.blur, padding=1, groups=self.blur.shape[0])
        else:
            x = F.conv2d(x, self.weight, padding=self.padding)
        if self.energy is not None:
            x = x * torch.rsqrt(F.linear(s.pow(2), self.energy) + 1e-8)[:, :, None, None]
        return x


class _StyledConv(nn.Module):
    """Modulated conv -> + strength x fixed noise (one constant) -> bias, leaky ReLU x sqrt(2)."""

    def __init__(self, layer: StyledConv, index: int, noise: torch.Tensor) -> None:
        super().__init__()
        self.index, self.conv = index, _ModConv(layer.conv)
        self.noise = _const(float(layer.noise.weight) * noise.double())
        self.bias = _const(layer.activate.bias.double())
        self.clamp = layer.activate.clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = fused_leaky_relu(self.conv(x, w) + self.noise, self.bias)
        return x if self.clamp is None else x.clamp(-self.clamp, self.clamp)


class _ToRGB(nn.Module):
    """1x1 modulated conv without demodulation + bias, plus the FIR-up-sampled skip."""

    def __init__(self, layer: ToRGB, index: int) -> None:
        super().__init__()
        self.index, self.conv = index, _ModConv(layer.conv)
        self.bias = _const(layer.bias.double())
        self.clamp = layer.clamp
        # upfirdn2d(x, k, up=2, pad=(2, 1)) is a stride-2 transposed conv with padding 1
        # (the symmetric FIR kernel needs no flip): H -> 2H, one constant depthwise kernel.
        self.upsample = _fir(layer.upsample.kernel, 3) if hasattr(layer, "upsample") else None

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if self.clamp is not None:
            out = out.clamp(-self.clamp, self.clamp)
        if skip is None:
            return out
        return out + F.conv_transpose2d(skip, self.upsample, stride=2, padding=1, groups=3)


class TeacherGraph(nn.Module):
    """The teacher's synthesis network as an inference graph: W+ [B, n_latent, D] -> image,
    its fixed noise maps (``noise_mode="const"``) baked in, equalized-lr scales folded,
    demodulation energies precomputed (see :class:`_ModConv`). Computes
    ``Generator.synthesis(wplus, make_noise(1, "const"))`` (checked to float rounding) with
    constant weights, which the TorchScript ONNX exporter and XNNPACK need: the training
    module's per-sample weights fold the batch into conv groups.

    Has :class:`~pipeline.export.graph.ExportModel`'s interface (``kind``, ``input_shape``,
    ``resolution``), so ``export_onnx`` / ``export_pte`` write it."""

    kind = "wplus"

    @torch.no_grad()
    def __init__(self, generator: Generator) -> None:
        super().__init__()
        g = generator
        self.cfg = g.cfg
        self.n_latent, self.style_dim = g.cfg.n_latent, g.cfg.style_dim
        noise = [n.cpu() for n in g.make_noise(1, "const")]
        self.const = _const(g.input.input)
        self.convs = nn.ModuleList([_StyledConv(g.conv1, 0, noise[0])] + [
            _StyledConv(c, j + 1, noise[j + 1]) for j, c in enumerate(g.convs)])
        self.to_rgbs = nn.ModuleList([_ToRGB(g.to_rgb1, 1)] + [
            _ToRGB(t, 2 * b + 3) for b, t in enumerate(g.to_rgbs)])

    def forward(self, wplus: torch.Tensor) -> torch.Tensor:
        ws = [wplus[:, i : i + 1] for i in range(self.n_latent)]  # slices: XNNPACK runs them
        x = self.convs[0](self.const.expand(wplus.shape[0], -1, -1, -1), ws[0])
        skip = self.to_rgbs[0](x, ws[1], None)
        for b, to_rgb in enumerate(self.to_rgbs[1:]):
            for conv in self.convs[2 * b + 1 : 2 * b + 3]:
                x = conv(x, ws[conv.index])
            skip = to_rgb(x, ws[to_rgb.index], skip)
        return skip

    def input_shape(self, batch: int = 1) -> list[int]:
        return [batch, self.n_latent, self.style_dim]

    @property
    def resolution(self) -> int:
        return self.cfg.resolution


@dataclass
class Target:
    """One benchmarked network: ``net(wplus [B, n_latent, D]) -> image``, its physical MACs
    at batch 1 and its architecture (``teacher`` or ``student``)."""

    net: nn.Module
    arch: str
    macs: int | None
    params: int | None = None
    resolution: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def example(self, batch: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(self.net.input_shape(batch), generator=g)


def layout_teacher(resolution: int, style_dim: int, seed: int = 0) -> Generator:
    """A tiny teacher (4 channels) that only supplies a W+ layout and fixed noise maps for
    a student given without its teacher (latency does not depend on the noise values)."""
    cfg = StyleGAN2Config.config_f(resolution, channel_max=4, style_dim=style_dim, n_mlp=1)
    return random_generator(cfg, seed)


def random_student(cfg: StudentConfig, seed: int = 0) -> MobileSynthesis:
    """A random student whose fused demodulation is calibrated on random W+ (activations of
    a normal size, so no denormals or infinities distort the timings)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = MobileSynthesis(cfg).eval()
        teacher = layout_teacher(cfg.resolution, cfg.style_dim, seed)
        if cfg.demodulation == "fused":
            wplus = torch.randn(2, teacher.cfg.n_latent, cfg.style_dim)
            calibrate_demodulation(student, wplus, teacher.make_noise(1, "const"))
    return student


def config_f_pair(resolution: int = 1024, channel_multiplier: int = 2, seed: int = 0,
                  style_dim: int = 512, n_mlp: int = 8,
                  channel_max: int = 512) -> tuple[Generator, MobileSynthesis]:
    """A config-f teacher with random weights and its default full student
    (``StudentConfig.from_teacher``: the teacher's channels per feature resolution, fused
    demodulation; folded when the graph is built), random, demodulation calibrated."""
    cfg = StyleGAN2Config.config_f(resolution, channel_multiplier, channel_max, style_dim, n_mlp)
    teacher = random_generator(cfg, seed)
    student = random_student(StudentConfig.from_teacher(cfg.channels, resolution, style_dim), seed)
    return teacher, student


def _student_cost(cfg: StudentConfig) -> dict[str, int] | None:
    try:
        return cost.count("student", cfg.resolution, list(cfg.layer_widths), style_dim=cfg.style_dim)
    except cost.CostError:
        return None


def prepare(model: Any, teacher: Generator | None = None, seed: int = 0, check: bool = True) -> Target:
    """A :class:`Target` from a teacher (``Generator`` or ``StyleGAN2Config``: random weights),
    a student (``MobileSynthesis``, or ``StudentConfig``: random weights) or a Target.

    Modules are copied (moved to CPU, float32, eval): the caller's are left as they are.
    A student's W+ layout and fixed noise come from ``teacher`` (or a tiny layout teacher).
    With ``check``, the graph's output is compared once with the training module's
    (``info["graph_max_abs_err"]``, batch 1).
    """
    if isinstance(model, Target):
        return model
    if isinstance(model, StyleGAN2Config):
        model = random_generator(model, seed)
    if isinstance(model, StudentConfig):
        model = random_student(model, seed)
    if isinstance(model, Generator):
        g = copy.deepcopy(model).cpu().float().eval()
        c = g.cfg
        counted = cost.count("teacher", c.resolution, list(c.layer_widths), style_dim=c.style_dim,
                             n_mlp=c.n_mlp)
        target = Target(TeacherGraph(g).eval(), "teacher", counted["macs"], counted["params"],
                        c.resolution, {"graph": "TeacherGraph (Generator.synthesis, const noise)"})
        if check:
            x = target.example(1, seed)
            with torch.no_grad():
                want = g.synthesis(x, g.make_noise(1, "const"))
                target.info["graph_max_abs_err"] = float((target.net(x) - want).abs().max())
        return target
    if isinstance(model, MobileSynthesis):
        from .export.graph import build, reference

        s = copy.deepcopy(model).cpu().float().eval()
        c = s.cfg
        if teacher is None:
            teacher = layout_teacher(c.resolution, c.style_dim, seed)
        teacher = copy.deepcopy(teacher).cpu().float().eval()
        net = build(s, teacher, "wplus", output_range=(-1.0, 1.0))
        counted = _student_cost(c)
        target = Target(net, "student", counted and counted["macs"], counted and counted["params"],
                        c.resolution, {"graph": "pipeline.export.graph (folded, last head)"})
        if check:
            x = target.example(1, seed)
            with torch.no_grad():
                want = reference(s, teacher, "wplus", x, output_range=(-1.0, 1.0))
                target.info["graph_max_abs_err"] = float((net(x) - want).abs().max())
        return target
    raise BenchError(f"cannot benchmark a {type(model).__name__}: give a Generator, a "
                     f"MobileSynthesis, a StyleGAN2Config, a StudentConfig or a Target")


# -- runtimes -----------------------------------------------------------------------------
def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


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

        from .export.formats import export_onnx

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
        from .export.formats import export_pte, unavailable

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


def check_runtimes(runtimes: Sequence[str] | str) -> list[str]:
    if isinstance(runtimes, str):
        runtimes = [r.strip() for r in runtimes.split(",") if r.strip()]
    unknown = [r for r in runtimes if r not in RUNTIMES]
    if unknown or not runtimes:
        raise BenchError(f"unknown runtime {', '.join(map(repr, unknown)) or '(none given)'}; "
                         f"choose from {', '.join(RUNTIMES)}")
    return list(dict.fromkeys(runtimes))


def check_batches(batch_sizes: Sequence[int]) -> list[int]:
    if not batch_sizes or any(not isinstance(b, int) or isinstance(b, bool) or b < 1
                              for b in batch_sizes):
        raise BenchError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    return sorted(set(batch_sizes))


def batch_key(batch: int) -> str:
    return f"batch_{batch}"


# -- the benchmark ------------------------------------------------------------------------
def bench(models: Mapping[str, Any], runtimes: Sequence[str] = RUNTIMES,
          batch_sizes: Sequence[int] = (1, 8), warmup: int = 2, repeats: int = 10,
          threads: int | None = None, workdir: str | Path | None = None, *,
          device: str = "cpu", teacher: Generator | None = None, peak_n: int | None = None,
          opset: int = OPSET, seed: int = 0) -> dict[str, Any]:
    """Time every model in every runtime at every batch size, in this process.

    ``models``: name -> Generator / MobileSynthesis / StyleGAN2Config / StudentConfig /
    :class:`Target` (see :func:`prepare`; ``teacher`` gives students their W+ layout and
    noise). ``threads``: for every runtime (None: torch's current count). ``workdir``:
    where exported files go (None: a temporary folder, removed afterwards).

    Returns (layout: README "Benchmark")::

        {"machine": {...}, "machine_text": str, "device", "threads", "peak_gmacs",
         "peaks": {device: GMAC/s}, "matmul_gmacs": {device: {"mm", "onednn"}},
         "warmup", "repeats", "batch_sizes", "runtimes",
         "models": {name: {runtime: {"batch_B": {"median_ms", "p90_ms", "mean_ms", "min_ms",
                                                 "repeats", "gmacs_per_s", "efficiency"}}}},
         "model_info": {name: {"arch", "resolution", "macs", "params", "graph"}},
         "runtime_devices": {name: {runtime: str}},
         "parity": {name: {runtime: max abs difference to pytorch at batch 1}},
         "rows": [[name, runtime, batch, median_ms, p90_ms, gmacs_per_s, efficiency]],
         "skipped": {"name/runtime[/batch_B]": reason}}
    """
    runtimes = check_runtimes(runtimes)
    batch_sizes = check_batches(batch_sizes)
    if warmup < 0 or repeats < 1:
        raise BenchError(f"warmup must be >= 0 and repeats >= 1, got {warmup}, {repeats}")
    if threads is not None and threads < 1:
        raise BenchError(f"threads must be >= 1, got {threads}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device {device!r} asked for, but CUDA is not available")
    targets = {name: prepare(m, teacher, seed) for name, m in models.items()}
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
        workdir = Path(workdir)
        n_threads = stack.enter_context(_threads(threads, "executorch" in runtimes))
        rates = {"cpu": matmul_rates("cpu", n_threads, peak_n)}
        if str(device).startswith("cuda"):
            rates[str(device)] = matmul_rates(str(device), n_threads, peak_n)
        peaks = {dev: max(r.values()) for dev, r in rates.items()}
        result: dict[str, Any] = {
            "machine": machine_info(device), "device": str(device), "threads": n_threads,
            "peak_gmacs": peaks[str(device)], "peaks": peaks, "matmul_gmacs": rates,
            "warmup": warmup, "repeats": repeats, "batch_sizes": batch_sizes, "runtimes": runtimes,
            "models": {}, "model_info": {}, "runtime_devices": {}, "parity": {}, "rows": [], "skipped": {},
        }
        result["machine_text"] = machine_text(result["machine"])
        for name, target in targets.items():
            result["model_info"][name] = {"arch": target.arch, "resolution": target.resolution,
                                          "macs": target.macs, "params": target.params,
                                          **target.info}
            folder = workdir / name
            folder.mkdir(parents=True, exist_ok=True)
            _bench_model(name, target, runtimes, batch_sizes, warmup, repeats, n_threads, folder,
                         str(device), peaks, opset, seed, result)
    return result


def _bench_model(name: str, target: Target, runtimes: list[str], batch_sizes: list[int],
                 warmup: int, repeats: int, threads: int, folder: Path, device: str,
                 peaks: dict[str, float], opset: int, seed: int, result: dict[str, Any]) -> None:
    reference: dict[int, torch.Tensor] = {}
    for rt in runtimes:
        try:
            with _quiet():
                runtime = _RUNTIME_CLASSES[rt](target, folder, device, threads, opset)
        except Exception as e:  # not installed, or the model does not export to it
            result["skipped"][f"{name}/{rt}"] = _reason(e)
            continue
        on = runtime.on
        result["runtime_devices"].setdefault(name, {})[rt] = runtime.where
        try:
            for batch in batch_sizes:
                key = f"{name}/{rt}/{batch_key(batch)}"
                x = target.example(batch, seed)
                try:
                    fn = runtime.runner(x)
                    out = fn()
                    stats = measure(fn, warmup, repeats, on)
                except Exception as e:
                    result["skipped"][key] = _reason(e)
                    continue
                out = torch.as_tensor(out).detach().float().cpu()
                if rt == "pytorch":
                    reference[batch] = out
                elif batch in reference and batch == batch_sizes[0]:
                    result["parity"].setdefault(name, {})[rt] = float((out - reference[batch]).abs().max())
                macs = None if target.macs is None else target.macs * batch
                gmacs = None if macs is None else macs / (stats["median_ms"] / 1e3) / 1e9
                stats["gmacs_per_s"] = gmacs
                stats["efficiency"] = None if gmacs is None else gmacs / peaks.get(on, peaks["cpu"])
                result["models"].setdefault(name, {}).setdefault(rt, {})[batch_key(batch)] = stats
                result["rows"].append([name, rt, batch, stats["median_ms"], stats["p90_ms"], gmacs,
                                       stats["efficiency"]])
        finally:
            runtime.close()


# -- the teacher / student ratio ----------------------------------------------------------
def ratios(result: Mapping[str, Any], teacher: str = "teacher", student: str = "student",
           batch: int = 1) -> dict[str, Any]:
    """Teacher median / student median per runtime from a :func:`bench` result, and the
    MAC ratio (pipeline.cost, physical) next to MobileStyleGAN's published 9.5x."""
    key = batch_key(batch)
    out: dict[str, Any] = {"runtimes": {}, "latency_ratio": {}}
    t_rt, s_rt = result["models"].get(teacher, {}), result["models"].get(student, {})
    for rt in result["runtimes"]:
        t, s = t_rt.get(rt, {}).get(key), s_rt.get(rt, {}).get(key)
        if t and s:
            out["runtimes"][rt] = {"teacher_ms": t["median_ms"], "student_ms": s["median_ms"],
                                   "teacher_p90_ms": t["p90_ms"], "student_p90_ms": s["p90_ms"]}
            out["latency_ratio"][rt] = t["median_ms"] / s["median_ms"]
    t_macs = result["model_info"].get(teacher, {}).get("macs")
    s_macs = result["model_info"].get(student, {}).get("macs")
    out["mac_ratio"] = t_macs / s_macs if t_macs and s_macs else None
    out["mac_ratio_mobilestylegan"] = MOBILESTYLEGAN_MAC_RATIO
    return out


def latency_ratio_1024(runtimes: Sequence[str] = RUNTIMES, resolution: int = 1024,
                       channel_multiplier: int = 2, warmup: int = 1, repeats: int = 3,
                       threads: int | None = None, workdir: str | Path | None = None, *,
                       device: str = "cpu", seed: int = 0, peak_n: int | None = None,
                       channel_max: int = 512, style_dim: int = 512, n_mlp: int = 8) -> dict[str, Any]:
    """Config-f teacher (random weights: speed only) vs its default full student at
    ``resolution`` (1024 for the headline figure), batch 1, same run, same threads.
    ``channel_max``, ``style_dim`` and ``n_mlp`` shrink it for tests (config-f: 512, 512, 8).

    Returns ``{"resolution", "channel_multiplier", "weights": "random (speed only)",
    "latency_ratio": {runtime: teacher ms / student ms}, "runtimes": {runtime:
    {"teacher_ms", "student_ms", "teacher_p90_ms", "student_p90_ms"}}, "mac_ratio",
    "mac_ratio_mobilestylegan": 9.5, "teacher_macs", "student_macs", "threads",
    "peak_gmacs", "machine", "machine_text", "skipped", "bench": the full bench() result}``.
    """
    runtimes = check_runtimes(runtimes)
    teacher, student = config_f_pair(resolution, channel_multiplier, seed, style_dim, n_mlp, channel_max)
    result = bench({"teacher": teacher, "student": student}, runtimes, (1,), warmup, repeats,
                   threads, workdir, device=device, teacher=teacher, peak_n=peak_n, seed=seed)
    info = result["model_info"]
    return {"resolution": resolution, "channel_multiplier": channel_multiplier,
            "channel_max": channel_max, "weights": RANDOM_WEIGHTS, **ratios(result),
            "teacher_macs": info["teacher"]["macs"], "student_macs": info["student"]["macs"],
            "threads": result["threads"], "peak_gmacs": result["peak_gmacs"],
            "machine": result["machine"], "machine_text": result["machine_text"],
            "skipped": result["skipped"], "bench": result}


# -- the evaluate stage's entry point -----------------------------------------------------
def evaluate_latency(cfg: Any, models: Sequence[Any], teacher: Generator,
                     workdir: str | Path, device: str = "cpu") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Latency of the evaluate stage's models (objects with ``name``, ``module`` and
    ``cost["macs"]``) per ``cfg`` (params ``evaluate.latency``), and the config-f ratio at
    1024 when ``cfg.ratio_1024``. Returns (:func:`bench` result, :func:`latency_ratio_1024`
    result or None)."""
    targets = {}
    for m in models:
        t = prepare(m.module, teacher)
        macs = (getattr(m, "cost", None) or {}).get("macs")
        targets[m.name] = Target(t.net, t.arch, macs if macs is not None else t.macs, t.params,
                                 t.resolution, t.info)
    workdir = Path(workdir)
    latency = bench(targets, cfg.runtimes, cfg.batch_sizes, cfg.warmup, cfg.repeats, cfg.threads,
                    workdir / "models", device=device, teacher=teacher)
    ratio = None
    if getattr(cfg, "ratio_1024", False):
        ratio = latency_ratio_1024(cfg.runtimes, 1024, 2, min(cfg.warmup, 1),
                                   getattr(cfg, "ratio_repeats", 3), cfg.threads, workdir / "ratio_1024",
                                   device=device)
    return latency, ratio


# -- output -------------------------------------------------------------------------------
def _f(v: Any, spec: str) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def table(result: Mapping[str, Any], ratio: Mapping[str, Any] | None = None) -> str:
    """The human-readable table of a :func:`bench` result (and of :func:`ratios`)."""
    lines = [f"machine: {result['machine_text']}",
             f"threads: {result['threads']}; device: {result['device']}; measured fp32 matmul peak "
             f"{_f(result['peak_gmacs'], '.1f')} GMAC/s; warm-up {result['warmup']}, "
             f"{result['repeats']} timed runs"]
    header = ["model", "runtime", "batch", "median ms", "p90 ms", "GMAC/s", "efficiency"]
    rows = [[str(name), rt, str(b), _f(med, ".2f"), _f(p90, ".2f"), _f(g, ".2f"),
             _f(None if e is None else 100 * e, ".1f") + ("%" if e is not None else "")]
            for name, rt, b, med, p90, g, e in result["rows"]]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
    lines += ["", fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in rows]
    if ratio and ratio.get("latency_ratio"):
        lines += ["", "teacher / student latency ratio (batch 1, same run, same threads):"]
        for rt, r in ratio["latency_ratio"].items():
            ms = ratio["runtimes"][rt]
            lines.append(f"  {rt:<12} {r:6.2f}x   ({ms['teacher_ms']:.2f} ms / {ms['student_ms']:.2f} ms)")
        lines.append(f"  MACs (pipeline.cost, physical): {_f(ratio.get('mac_ratio'), '.2f')}x; "
                     f"MobileStyleGAN's paper: {MOBILESTYLEGAN_MAC_RATIO}x")
        if ratio.get("weights"):
            lines.append(f"  weights: {ratio['weights']}")
    if result["skipped"]:
        lines += ["", "not measured:"] + [f"  {k}: {v}" for k, v in result["skipped"].items()]
    return "\n".join(lines)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


# -- CLI ----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _batches(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch must be an integer or a comma list, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"--batch must be positive, got {text!r}")
    return sorted({1, *values}) if len(values) == 1 else sorted(set(values))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _load_models(args: argparse.Namespace) -> tuple[dict[str, Any], Generator | None]:
    from .checkpoints import load_teacher
    from .checkpoints.project import load_student

    for flag in ("student", "teacher"):
        path = getattr(args, flag)
        if path is not None and not Path(path).is_file():
            raise BenchError(f"--{flag}: no such file: {path}")
    models: dict[str, Any] = {}
    teacher = student = None
    if args.config_f is not None:
        r = args.config_f
        if r < 8 or r > 4096 or r & (r - 1):
            raise BenchError(f"--config-f: resolution must be a power of two in [8, 4096], got {r}")
        teacher, student = config_f_pair(r, args.channel_multiplier, args.seed,
                                         channel_max=args.channel_max)
    if args.teacher is not None:
        teacher = load_teacher(args.teacher).generator
    if args.student is not None:
        student = load_student(args.student)[0]
    if teacher is None and student is None:
        raise BenchError("nothing to benchmark: give --student and/or --teacher, or --config-f RES")
    if teacher is not None:
        models["teacher"] = teacher
    if student is not None:
        if teacher is not None and (student.cfg.style_dim != teacher.cfg.style_dim
                                    or student.cfg.resolution > teacher.cfg.resolution):
            raise BenchError(f"the student ({student.cfg.resolution}px, style_dim {student.cfg.style_dim})"
                             f" does not fit the teacher ({teacher.cfg.resolution}px, "
                             f"style_dim {teacher.cfg.style_dim})")
        models["student"] = student
    return models, teacher


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m pipeline.bench", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    src = parser.add_argument_group("models (a teacher and a student also give their latency ratio)")
    src.add_argument("--student", help="student checkpoint (project safetensors, distill's output)")
    src.add_argument("--teacher", help="teacher checkpoint (any format fetch_teacher reads)")
    src.add_argument("--config-f", type=_positive, metavar="RES",
                     help="a config-f teacher at RES with random weights and its default full "
                          "student (speed only); --teacher/--student replace either")
    src.add_argument("--channel-multiplier", type=_positive, default=2, help="for --config-f (2)")
    src.add_argument("--channel-max", type=_positive, default=512,
                     help="for --config-f: channel cap (512, config-f's; smaller for quick tries)")
    parser.add_argument("--runtimes", default=",".join(RUNTIMES),
                        help=f"comma list of {', '.join(RUNTIMES)} (all)")
    parser.add_argument("--batch", type=_batches, default=[1],
                        help="B: batch sizes 1 and B (or a comma list); default 1")
    parser.add_argument("--threads", type=_positive, help="threads for every runtime (default: "
                        "torch's count, the usable cores)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first (1)")
    parser.add_argument("--repeats", type=_positive, default=5, help="timed runs (5)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (PyTorch and ORT's CUDA EP)")
    parser.add_argument("--workdir", help="keep exported files here (default: a temporary folder)")
    parser.add_argument("--json", metavar="OUT", help="write the full result as JSON")
    parser.add_argument("--seed", type=int, default=0, help="random weights and inputs")
    args = parser.parse_args(argv)
    try:
        runtimes = check_runtimes(args.runtimes)
        if args.warmup < 0:
            raise BenchError(f"--warmup must be >= 0, got {args.warmup}")
        if args.device != "cpu" and not (args.device.startswith("cuda") and torch.cuda.is_available()):
            raise BenchError(f"--device {args.device!r}: use cpu, or cuda on a machine with CUDA")
        models, teacher = _load_models(args)
        result = bench(models, runtimes, args.batch, args.warmup, args.repeats, args.threads,
                       args.workdir, device=args.device, teacher=teacher, seed=args.seed)
    except PipelineError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    ratio = None
    if {"teacher", "student"} <= set(models):
        ratio = ratios(result)
        if args.config_f is not None and args.teacher is None:
            ratio["weights"] = RANDOM_WEIGHTS
        result["ratio"] = ratio
    print(table(result, ratio))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
