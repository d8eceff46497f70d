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
  the same count), batch 1 only (the program is exported for batch 1);
* ``onnxruntime-int8``, ``executorch-int8``, ``executorch-fp16`` (opt-in): the files
  quantized to int8 as the export stage does, and its half-precision program.

A runtime that is not installed, or a model that does not export or run in it, is not
an error: the reason is recorded under ``skipped`` and the other figures are still
measured. Outputs of ONNX Runtime and ExecuTorch are compared with PyTorch's on the
timed input (``parity``: max abs difference).

Figures: median / p90 / mean / min of ``repeats`` timed calls after ``warmup`` calls
(``time.perf_counter``, CUDA synchronised), achieved GMAC/s = physical MACs of the
network (:func:`pipeline.cost.count`, ``macs``) x batch / median, and efficiency =
achieved / the machine's peak, a large fp32 matrix multiply measured in the same process
with the same threads (:func:`peak_gmacs`); none for int8 and fp16 runtimes (an fp32
peak is not their yardstick).

:func:`latency_ratio_1024`: the headline ratio, a config-f teacher (random weights:
speed only) against its default MobileStyleGAN student, batch 1, same run and threads.

``python -m pipeline.bench --help``: the same table for checkpoints or config-f pairs.
``python -m pipeline.bench latency-table --help``: the per-layer latency table of a student
that the search stage's latency budgets are predicted with (:mod:`pipeline.bench.latency`).
"""

# The package, one job a module (``python -m pipeline.bench --help`` prints the docstring
# above): ``timing`` (measure, threads), ``machine`` (CPU, versions, matmul peak),
# ``targets`` (what is timed: the teacher's graph, pipeline.export.teacher_graph, or the
# student's, pipeline.export.graph), ``runtimes`` (one adapter per runtime), ``suite``
# (bench, ratios, the evaluate stage's entry point, the table), ``latency`` (the search's
# per-layer latency model) and ``cli``.

from ..export.teacher_graph import TeacherGraph
from .cli import main
from .machine import machine_info, machine_text, matmul_rates, peak_gmacs
from .runtimes import _RUNTIME_CLASSES as _RUNTIME_CLASSES  # by name; tests replace entries
from .runtimes import OPSET, RUNTIMES, check_runtimes, open_runtime
from .suite import (
    MOBILESTYLEGAN_MAC_RATIO,
    batch_key,
    bench,
    check_batches,
    evaluate_latency,
    latency_ratio_1024,
    ratio_1024,
    ratios,
    student_efficiency,
    table,
)
from .targets import RANDOM_WEIGHTS, Target, config_f_pair, layout_teacher, prepare, random_student
from .timing import BenchError, interleave, measure, round_ratio, using_threads

__all__ = [
    "MOBILESTYLEGAN_MAC_RATIO", "OPSET", "RANDOM_WEIGHTS", "RUNTIMES", "BenchError", "Target",
    "TeacherGraph", "batch_key", "bench", "check_batches", "check_runtimes", "config_f_pair",
    "evaluate_latency", "interleave", "latency_ratio_1024", "layout_teacher", "machine_info",
    "machine_text", "main", "matmul_rates", "measure", "open_runtime", "peak_gmacs", "prepare",
    "random_student", "ratio_1024", "ratios", "round_ratio", "student_efficiency", "table",
    "using_threads",
]
