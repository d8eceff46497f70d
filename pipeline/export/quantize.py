"""int8 students: post-training static quantization of an exported network, calibrated
on the inputs an app would feed it.

* ``pte``: PT2E (``torch.export`` -> ``prepare_pt2e`` with XNNPACK's quantizer, symmetric
  int8 with per-channel weights -> calibration -> ``convert_pt2e``), lowered with the
  XNNPACK delegate like the fp32 program; batch 1.
* ``onnx``: ``onnxruntime.quantization.quantize_static`` of the fp32 ``.onnx`` file in QDQ
  form (per-channel int8 weights, uint8 activations, MinMax calibration); dynamic batch.

Calibration inputs (:func:`latent_inputs`) are of the model's input kind, drawn from the
teacher's mapping network with a truncation: ``z`` itself, its ``w``, or a W+ that mixes
two styles. A set whose inputs are all the same (truncation 0 maps every latent to
``w_avg``) gives every activation a zero range: it is refused, not quantized.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import PipelineError
from ..metrics.fixed_latents import psnr
from ..models.stylegan2 import Generator
from .formats import Format, _quiet, first_unusable, pte_facts
from .graph import InputKind, for_runtime

INT8_FORMATS: tuple[Format, ...] = ("onnx", "pte")
_NEEDS = {
    "onnx": ("onnx", "onnxruntime.quantization"),
    "pte": ("torchao.quantization.pt2e.quantize_pt2e",
            "executorch.backends.xnnpack.quantizer.xnnpack_quantizer",
            "executorch.backends.xnnpack.partition.xnnpack_partitioner"),
}


class CalibrationError(PipelineError):
    """A calibration set that cannot quantize a network (empty, degenerate, not finite)."""


def unavailable(fmt: Format) -> str | None:
    """Why int8 ``fmt`` cannot be produced here, or None when it can."""
    if fmt not in _NEEDS:
        return f"int8 {fmt}: no int8 quantization for this format (int8 formats: {list(INT8_FORMATS)})"
    return first_unusable(_NEEDS[fmt], f"int8 {fmt}")


@torch.no_grad()
def latent_inputs(teacher: Generator, n: int, seed: int, truncation_psi: float) -> dict[InputKind, torch.Tensor]:
    """``n`` inputs of each kind from one seed: z, its truncated w, and a W+ that mixes two
    styles at the middle entry (so every layer's entry matters)."""
    g = torch.Generator().manual_seed(seed)
    d = teacher.cfg.style_dim
    z, z_mix = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    w = teacher.truncate(teacher.mapping(z), truncation_psi)
    w_mix = teacher.truncate(teacher.mapping(z_mix), truncation_psi)
    return {"z": z, "w": w, "wplus": teacher.broadcast(w, w_mix, teacher.cfg.n_latent // 2)}


Sample = tuple[torch.Tensor, ...]  # one call's inputs, batch 1


def samples_of(calibration: torch.Tensor | Sequence[Sample]) -> list[Sample]:
    """Calibration as calls: a one-input network's batch one row at a time, or the calls
    of a several-input network (a latency table's layer) as given."""
    if isinstance(calibration, torch.Tensor):
        return [(x,) for x in calibration.float().split(1)]
    return [tuple(x.float() for x in sample) for sample in calibration]


def check_calibration(calibration: torch.Tensor | Sequence[Sample], where: str) -> list[Sample]:
    """The calls to calibrate with; a set that would give every activation a useless
    range is refused (each input must vary over the set)."""
    samples = samples_of(calibration)
    if len(samples) < 2:
        raise CalibrationError(f"{where}: {len(samples)} calibration input(s); int8 calibration "
                               "needs at least 2 different inputs")
    for i in range(len(samples[0])):
        x = torch.cat([s[i] for s in samples])
        if not torch.isfinite(x).all():
            raise CalibrationError(f"{where}: the calibration inputs are not all finite")
        if float((x - x[:1]).abs().max()) == 0:
            raise CalibrationError(f"{where}: all {len(samples)} calibration inputs are the same "
                                   "(a truncation of 0 maps every latent to w_avg): the "
                                   "activation ranges would be one point")
    return samples


def lower_int8_xnnpack(module: torch.nn.Module, calibration: torch.Tensor | Sequence[Sample],
                       where: str) -> Any:
    """``module`` quantized by PT2E (XNNPACK's quantizer, symmetric int8, per-channel
    weights), calibrated one call at a time as the batch-1 program runs, and lowered to
    the XNNPACK delegate: the edge program manager."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    samples = check_calibration(calibration, where)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    with _quiet(), torch.no_grad():
        module = for_runtime(module, "xnnpack").float()
        prepared = prepare_pt2e(torch.export.export(module, samples[0]).module(), quantizer)
        for sample in samples:
            prepared(*sample)
        program = torch.export.export(convert_pt2e(prepared), samples[0])
        return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def quantize_pte(model: torch.nn.Module, path: Path,
                 calibration: torch.Tensor | Sequence[Sample]) -> dict[str, Any]:
    """Write the int8 XNNPACK program of ``model`` to ``path``, calibrated on ``calibration``."""
    samples = check_calibration(calibration, path.name)
    edge = lower_int8_xnnpack(model, samples, path.name)
    with _quiet():
        facts = pte_facts(edge)
        path.write_bytes(edge.to_executorch().buffer)
    return {**facts, "quantization": "PT2E XNNPACKQuantizer, symmetric int8, per-channel weights",
            "calibration_samples": len(samples)}


def quantize_onnx(src: Path, dst: Path, calibration: torch.Tensor | Sequence[Sample],
                  input_names: str | Sequence[str]) -> dict[str, Any]:
    """Write the QDQ int8 version of the fp32 ONNX file ``src`` to ``dst``; ``input_names``
    are the file's inputs in the order of a calibration call's tensors."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    samples = check_calibration(calibration, dst.name)
    names = [input_names] if isinstance(input_names, str) else list(input_names)
    src, dst = src.resolve(), dst.resolve()  # the work below runs in a scratch directory

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{n: x.numpy() for n, x in zip(names, sample, strict=True)}
                               for sample in samples])

        def get_next(self) -> dict | None:
            return next(self.feeds, None)

    # Both steps write scratch files into the working directory: give them their own.
    with tempfile.TemporaryDirectory(prefix="int8-onnx-") as tmp, _quiet(), contextlib.chdir(tmp):
        pre = Path(tmp) / "pre.onnx"
        # ORT's symbolic shape inference gives up on the pixel shuffles; ONNX's own suffices.
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    proto = onnx.load(str(dst))
    onnx.checker.check_model(proto, full_check=True)
    return {"nodes": len(proto.graph.node), "batch": "dynamic",
            "quantization": "onnxruntime quantize_static, QDQ, per-channel int8 weights, "
                            "uint8 activations (MinMax)",
            "calibration_samples": len(samples)}


def to_symmetric(image: torch.Tensor, output_range: tuple[float, float]) -> torch.Tensor:
    """An exported model's image in ``output_range`` mapped to [-1, 1] (what LPIPS and
    PSNR take)."""
    low, high = output_range
    return (image.float() - (high + low) / 2) * (2 / (high - low))


@torch.no_grad()
def int8_quality(fp32: torch.Tensor, int8: torch.Tensor, lpips, output_range: tuple[float, float],
                 batch: int) -> dict[str, float]:
    """The int8 file's images against its fp32 file's on the same inputs: LPIPS (mean and
    worst sample, on [-1, 1] images) and PSNR (median and worst, peak-to-peak of the range)."""
    if not torch.isfinite(int8).all():
        return {"lpips": float("inf"), "lpips_max": float("inf"), "psnr": float("-inf"),
                "psnr_min": float("-inf")}
    int8, fp32 = to_symmetric(int8, output_range), to_symmetric(fp32, output_range)
    dist = torch.cat([lpips(a, b).flatten() for a, b in zip(int8.split(batch), fp32.split(batch),
                                                             strict=True)])
    scores = psnr(int8, fp32)  # in [-1, 1]: the same dB as on the output range
    return {"lpips": float(dist.mean()), "lpips_max": float(dist.max()),
            "psnr": float(scores.median()), "psnr_min": float(scores.min())}


def speedup(fmt: Format, fp32_path: Path, int8_path: Path, x: torch.Tensor, threads: int,
            repeats: int, seconds: float | None = None) -> dict[str, float]:
    """Batch-1 latency of both files in ``fmt``'s runtime, same threads, timed in alternating
    rounds (at least ``repeats``, more until ``seconds``); the speed-up is the median of the
    per-round fp32 / int8 ratios."""
    from ..bench.timing import interleave, round_ratio, summary, using_threads
    from .formats import onnx_runner, pte_runner

    x = x[:1].float()
    with using_threads(threads, executorch=fmt == "pte"):
        runs = {name: onnx_runner(path, threads) if fmt == "onnx" else pte_runner(path)
                for name, path in (("fp32", fp32_path), ("int8", int8_path))}
        times = interleave({name: lambda run=run: run(x) for name, run in runs.items()},
                           warmup=2, repeats=repeats, seconds=seconds)
    return {"fp32_ms": summary(times["fp32"])["median_ms"], "int8_ms": summary(times["int8"])["median_ms"],
            "speedup": round_ratio(times["fp32"], times["int8"])["ratio"]}
