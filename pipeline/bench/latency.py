"""The latency model of student sub-networks, per runtime: a lookup table of measured
per-layer latencies plus a fitted overhead, checked on held-out configurations.

Layers (:func:`layers_of`) are those of the inference graph (pipeline.export.graph),
each keyed by :class:`LayerKey` (kind, input width, output width, feature resolution):

    input  the 4x4 conv on the constant                  (widths[0] -> widths[1])
    up     a level's IDWT up-sampling                    (widths[i], its C/4 bands out)
    conv1  the level's first conv, after the IDWT        (widths[i] -> widths[i+1], C/4 in)
    conv2  its second conv                               (widths[i+1] -> widths[i+2])
    head   a head that draws (with skips: + the bilinear x2 of the image before)

Widths are the search's genes (pipeline.stages.search.Space, pipeline/cost.py's
convention). The table holds, for every layer, the widths ``grid`` spread over the
layer's choices (ends included) and interpolates between them, bilinearly in (input,
output) width: a DW-separable conv's work is a + b in + c out + d in out, which
bilinear interpolation reproduces exactly. Each entry is measured in the runtime
itself, batch 1, the given threads:

* onnxruntime: the layer alone, exported and timed in its own session, less an empty
  session call's time (the call overhead);
* executorch: every layer of a kind in one XNNPACK program (lowering costs ~0.3 s per
  layer, far too much to do per entry), timed by ExecuTorch's own profiler (ETDump):
  each layer's operators are contiguous (after those XNNPACK hoists, one per layer), so
  its time is the sum of theirs.

An int8 table (``precision="int8"``) quantizes each of those networks as the export stage
does (pipeline.export.quantize), calibrated on a few random calls: the scales do not change
the time, and XNNPACK's quantize / dequantize operators fall in their layer's run too.

Every time here, layers and whole networks alike, is the fastest of ``repeats`` runs
after warm-up (timeit's advice: on a shared machine the slower runs measure the other
jobs, and the median of a 0.1 ms network moves by tens of percent with them).

A configuration's predicted latency is ``a + b * sum(its layers)``, a and b fitted by
least squares on whole configurations measured exported (the smallest, middle and
full widths at every output resolution the search can choose): a is the per-call
overhead, b what layers cost in a chain rather than alone (caches, operator hand-over).
The check: ``holdout`` random configurations measured the same way, their absolute
relative errors' median and max.

:func:`cached_model` keeps a model in the measurement store (pipeline.bench.measurements:
one per machine, shared by every clone) under a key of this code, the runtime versions,
the machine, and the threads, architecture, choices and measuring settings; an entry
that does not parse or whose key differs is measured again.
``python -m pipeline.bench latency-table`` measures one on a target device
(pipeline.bench.cli), which :func:`load_table` reads back and :func:`check_table`
holds against the student being searched.
"""

from __future__ import annotations

import json
import logging
import math
import random
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ..errors import PipelineError
from ..export.graph import for_runtime
from ..models.elastic import output_resolutions, quantize, subnet
from ..models.mobile import MobileSynthesis, StudentConfig, up2
from ..models.stylegan2 import Generator, NoiseInjection
from ..params import latency_model
from . import measurements
from .runtimes import OPSET, open_runtime
from .targets import layout_teacher, prepare, random_student
from .timing import BenchError, measure, using_threads

log = logging.getLogger(__name__)
VERSION = 4  # of the table's layout and measuring: a cache entry of another version is rebuilt
KINDS = ("input", "up", "conv1", "conv2", "head")
RUNTIMES = ("onnxruntime", "executorch")  # params.LATENCY_RUNTIMES
PRECISIONS = ("fp32", "int8")  # int8: pipeline.export.quantize's files
MODELS = tuple(latency_model(r, p) for p in PRECISIONS for r in RUNTIMES)  # params.LatencyBudget.model
CALIBRATION = 4  # random calls an int8 layer is calibrated on
WARMUP = 3


class LayerKey(NamedTuple):
    kind: str
    c_in: int
    c_out: int  # 0: set by c_in (up, head)
    res: int  # feature resolution

    @property
    def text(self) -> str:
        return f"{self.kind}/{self.c_in}/{self.c_out}/{self.res}"

    @classmethod
    def parse(cls, text: str) -> LayerKey:
        kind, c_in, c_out, res = text.split("/")
        if kind not in KINDS:
            raise ValueError(f"unknown layer kind {kind!r}")
        return cls(kind, int(c_in), int(c_out), int(res))


class Slot(NamedTuple):
    """A layer's place: kind, the genes (width indices) of its input and output, resolution."""

    kind: str
    gene_in: int
    gene_out: int | None
    res: int


def slots(skip: bool, resolution: int) -> list[Slot]:
    """The layers of the inference graph of an output ``resolution`` (pipeline.export.graph.
    Synthesis): the input layer, per level up + conv1 + conv2, and the heads that draw."""
    levels = int(math.log2(resolution)) - 3
    out = [Slot("input", 0, 1, 4)]
    if skip or levels == 0:
        out.append(Slot("head", 1, None, 4))
    for b in range(levels):
        r, i = 8 << b, 2 * b + 1
        out += [Slot("up", i, None, r), Slot("conv1", i, i + 1, r), Slot("conv2", i + 1, i + 2, r)]
        if skip or b == levels - 1:
            out.append(Slot("head", i + 2, None, r))
    return out


def layers_of(skip: bool, widths: Sequence[int], resolution: int) -> list[LayerKey]:
    return [LayerKey(s.kind, widths[s.gene_in], 0 if s.gene_out is None else widths[s.gene_out],
                     s.res) for s in slots(skip, resolution)]


def grid(choices: Sequence[int], points: int | None) -> list[int]:
    """``points`` of ``choices`` spread evenly, both ends included (None: all)."""
    if points is None or points >= len(choices):
        return list(choices)
    return sorted({choices[round(k * (len(choices) - 1) / (points - 1))] for k in range(points)})


def arch_of(cfg: StudentConfig) -> dict[str, Any]:
    """What layer latencies depend on (not the weights)."""
    return {"resolution": cfg.resolution, "full_widths": list(cfg.full_widths),
            "head": cfg.head, "input_layer": cfg.input_layer, "skip": cfg.skip,
            "style_dim": cfg.style_dim, "demodulation": cfg.demodulation}


# -- the model --------------------------------------------------------------------------
@dataclass
class LatencyModel:
    """One runtime's table (``entries``: LayerKey text -> ms), fit and check."""

    runtime: str
    precision: str
    threads: int
    arch: dict[str, Any]
    choices: list[list[int]]  # per gene, the widths the table covers (its grid)
    resolutions: list[int]
    entries: dict[str, float]
    fit: dict[str, float] = field(default_factory=dict)  # a (ms), b
    check: dict[str, Any] = field(default_factory=dict)  # median_abs_err, max_abs_err, configs
    machine: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0  # what measuring it took
    measured: dict[str, Any] = field(default_factory=dict)  # provenance when it came from the store

    def __post_init__(self) -> None:
        self._grid: dict[tuple[str, int], dict[tuple[int, int], float]] = {}
        for text, ms in self.entries.items():
            k = LayerKey.parse(text)
            self._grid.setdefault((k.kind, k.res), {})[(k.c_in, k.c_out)] = ms

    def layer(self, key: LayerKey) -> float:
        """A layer's ms: its entry, or interpolated bilinearly between the measured widths
        around it; KeyError when they do not surround it."""
        table = self._grid.get((key.kind, key.res))
        if not table:
            raise KeyError(key.text)
        ins, outs = sorted({a for a, _ in table}), sorted({b for _, b in table})
        (a0, a1, ta), (b0, b1, tb) = _bracket(ins, key.c_in, key), _bracket(outs, key.c_out, key)
        try:
            return ((1 - ta) * (1 - tb) * table[a0, b0] + ta * (1 - tb) * table[a1, b0]
                    + (1 - ta) * tb * table[a0, b1] + ta * tb * table[a1, b1])
        except KeyError:
            raise KeyError(key.text) from None

    def layers_ms(self, widths: Sequence[int], resolution: int) -> float:
        return sum(self.layer(k) for k in layers_of(self.arch["skip"], widths, resolution))

    def predict(self, widths: Sequence[int], resolution: int) -> float:
        return self.fit["a"] + self.fit["b"] * self.layers_ms(widths, resolution)

    def to_json(self, key: dict[str, Any] | None = None) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if not k.startswith("_") and k != "measured"}
        return {"version": VERSION, **({"key": key} if key is not None else {}), **d}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LatencyModel:
        if not isinstance(data, dict) or data.get("version") != VERSION:
            raise ValueError(f"not a version-{VERSION} latency table")
        names = {f for f in cls.__dataclass_fields__}
        model = cls(**{k: v for k, v in data.items() if k in names})
        if set(model.fit) != {"a", "b"} or not model.entries:
            raise ValueError("no fit or no entries")
        return model


def _bracket(values: list[int], v: int, key: LayerKey) -> tuple[int, int, float]:
    if v in values:
        return v, v, 0.0
    below, above = [x for x in values if x < v], [x for x in values if x > v]
    if not below or not above:
        raise KeyError(key.text)
    a0, a1 = below[-1], above[0]
    return a0, a1, (v - a0) / (a1 - a0)


# -- micro networks: one layer each -----------------------------------------------------
class Layer(nn.Module):
    """One graph layer alone: (w, activation[, image before]) -> its output."""

    def __init__(self, key: LayerKey, module: nn.Module, skip: bool) -> None:
        super().__init__()
        self.key, self.module = key, module
        self.skip = skip and key.kind == "head" and key.res > 4

    def inputs(self, style_dim: int, seed: int = 0) -> list[torch.Tensor]:
        k, g = self.key, torch.Generator().manual_seed(seed)
        shape = {"input": None, "up": (k.c_in, k.res // 2), "conv1": (k.c_in // 4, k.res),
                 "conv2": (k.c_in, k.res), "head": (k.c_in, k.res)}[k.kind]
        xs = [torch.randn(1, 1, style_dim, generator=g)]
        if shape:
            xs.append(torch.randn(1, shape[0], shape[1], shape[1], generator=g))
        if self.skip:
            xs.append(torch.randn(1, 3, k.res, k.res, generator=g))
        return xs

    def forward(self, w: torch.Tensor, *xs: torch.Tensor) -> torch.Tensor:
        x = self.module(xs[0] if xs else None, w)
        return x + up2(xs[1]) if self.skip else x


class Branches(nn.Module):
    """Several layers side by side in one program: each reads its own inputs."""

    def __init__(self, layers: list[Layer], style_dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.counts = [len(layer.inputs(style_dim)) for layer in layers]

    def forward(self, *xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, i = [], 0
        for layer, n in zip(self.layers, self.counts, strict=True):
            out.append(layer(*xs[i : i + n]))
            i += n
        return tuple(out)


def timing_student(cfg: StudentConfig, seed: int = 0) -> tuple[MobileSynthesis, Generator]:
    """Random weights (latency does not depend on them) with the noise inputs on, as a
    trained student has them (a zero strength drops the add from the graph)."""
    student = random_student(cfg, seed)
    for m in student.modules():
        if isinstance(m, NoiseInjection):
            m.weight.data.fill_(0.1)
    return student, layout_teacher(cfg.resolution, cfg.style_dim, seed)


def micro_layers(cfg: StudentConfig, choices: list[list[int]], resolutions: list[int],
                 ) -> dict[LayerKey, Layer]:
    """A :class:`Layer` per key the table needs: graphs of configurations whose even genes
    take grid point i and odd ones j cover every (input, output) pair of every layer
    (a layer's genes are consecutive)."""
    student, teacher = timing_student(cfg)
    points = max(len(c) for c in choices)
    out: dict[LayerKey, Layer] = {}
    for res in resolutions:
        for i in range(points):
            for j in range(points):
                widths = [c[min(i if g % 2 == 0 else j, len(c) - 1)] for g, c in enumerate(choices)]
                keys = layers_of(cfg.skip, widths, res)
                if all(k in out for k in keys):
                    continue
                syn = prepare(subnet(student, widths, res), teacher, check=False).net.synthesis
                for key, module in zip(keys, _in_slot_order(syn), strict=True):
                    out.setdefault(key, Layer(key, module, cfg.skip))
    return out


def _in_slot_order(syn: nn.Module) -> list[nn.Module]:
    """The graph's modules in :func:`slots` order (a head follows layer 3k)."""
    out = []
    for k, layer in enumerate(syn.layers):
        out.append(layer)
        if str(k) in syn.heads:
            out.append(syn.heads[str(k)])
    return out


# -- measuring ---------------------------------------------------------------------------
def _ort_session(path: Path, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()  # as pipeline.bench.runtimes' adapter sets them
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Empty(nn.Module):
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + 1.0


def _ort_ms(module: nn.Module, xs: list[torch.Tensor], path: Path, threads: int, repeats: int,
            calibration: list[tuple[torch.Tensor, ...]] | None = None) -> float:
    """The fastest call of ``module`` exported alone; int8 (QDQ) when ``calibration`` is given."""
    names = [f"x{i}" for i in range(len(xs))]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(for_runtime(module, "onnxruntime"), tuple(xs), str(path),
                          input_names=names, opset_version=OPSET, dynamo=False)
    # An input the layer ignores (a level's first conv reads no style: Upsample.absorb)
    # is not in the file.
    import onnx

    kept = [i for i, n in enumerate(names) if n in {v.name for v in onnx.load(str(path)).graph.input}]
    if calibration is not None:
        from ..export.quantize import quantize_onnx

        quantize_onnx(path, path.with_suffix(".int8.onnx"),
                      [tuple(call[i] for i in kept) for call in calibration], [names[i] for i in kept])
        path = path.with_suffix(".int8.onnx")
    session = _ort_session(path, threads)
    feed = {names[i]: xs[i].numpy() for i in kept}
    return measure(lambda: session.run(None, feed), WARMUP, repeats)["min_ms"]


def calibration(layers: Sequence[Layer], style_dim: int) -> list[tuple[torch.Tensor, ...]]:
    """int8 tables: calls of ``layers`` (side by side) on random inputs. The scales they
    give do not matter for timing, only that every activation has a range."""
    return [tuple(x for layer in layers for x in layer.inputs(style_dim, seed))
            for seed in range(1, CALIBRATION + 1)]


def onnx_layers(layers: Sequence[Layer], style_dim: int, threads: int, repeats: int,
                workdir: Path, precision: str = "fp32") -> dict[LayerKey, float]:
    """Each layer in its own ONNX Runtime session (int8: quantized as the export stage
    does), less an empty call's time."""
    empty = _ort_ms(_Empty(), [torch.zeros(1, 1, style_dim)], workdir / "empty.onnx", threads, repeats)
    return {layer.key: max(0.0, _ort_ms(layer, layer.inputs(style_dim), workdir / "layer.onnx",
                                        threads, repeats,
                                        calibration([layer], style_dim) if precision == "int8" else None)
                           - empty)
            for layer in layers}


def executorch_layers(layers: Sequence[Layer], style_dim: int, threads: int, repeats: int,
                      workdir: Path, precision: str = "fp32") -> dict[LayerKey, float]:
    """Every layer of a kind in one XNNPACK program (int8: quantized by PT2E as the export
    stage does), each layer's time the sum of its operators' fastest runs in ExecuTorch's
    profile (their order is the layers')."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.devtools import Inspector
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from ..export.quantize import lower_int8_xnnpack
    from .runtimes import _ET_ENVELOPES

    out: dict[LayerKey, float] = {}
    groups: dict[tuple[str, bool], list[Layer]] = {}  # one operator sequence each
    for layer in layers:
        groups.setdefault((layer.key.kind, layer.skip), []).append(layer)
    for (kind, _), group in groups.items():
        t0 = time.perf_counter()
        net = for_runtime(Branches(group, style_dim).eval(), "xnnpack")
        xs = [x for layer in group for x in layer.inputs(style_dim)]
        path, dump = workdir / f"{kind}.pte", workdir / f"{kind}.etdump"
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            if precision == "int8":
                edge = lower_int8_xnnpack(net, calibration(group, style_dim), path.name)
            else:
                edge = to_edge_transform_and_lower(torch.export.export(net, tuple(xs)),
                                                   partitioner=[XnnpackPartitioner()])
            path.write_bytes(edge.to_executorch().buffer)
        with using_threads(threads, executorch=True):
            module = _load_for_executorch(str(path), enable_etdump=True)
            for _ in range(WARMUP + repeats):
                module.run_method("forward", xs)
            module.write_etdump_result_to_file(str(dump))
        with warnings.catch_warnings():  # "Output Buffer not found": no tensor data wanted
            warnings.simplefilter("ignore")
            blocks = Inspector(etdump_path=str(dump)).event_blocks
        ops = [(e.name.rsplit(" #", 1)[0], float(min(e.perf_data.raw[WARMUP:])))
               for block in blocks for e in block.events
               if e.perf_data and e.name not in _ET_ENVELOPES
               and len(e.perf_data.raw) == WARMUP + repeats]
        per_layer = _split(ops, len(group))
        if per_layer is None:
            raise BenchError(f"executorch's profile of the {kind} layers does not split into "
                             f"{len(group)} equal operator sequences ({len(ops)} operators): "
                             f"cannot attribute times to layers")
        out.update({layer.key: sum(ms for _, ms in p) for layer, p in zip(group, per_layer, strict=True)})
        log.debug("executorch: %d %s layers measured in %.1f s", len(group), kind,
                  time.perf_counter() - t0)
    return out


def _split(ops: list[tuple[str, float]], n: int) -> list[list[tuple[str, float]]] | None:
    """``ops`` as ``n`` layers' runs of the same operator kinds (XNNPACK picks kernels by
    shape: IGEMM, GEMM...), after a prologue it hoists (each layer's input or constant
    layout change, one run per layer, in layer order); None when they do not split."""
    for p in range(0, len(ops), n):
        rest, k = ops[p:], (len(ops) - p) // n
        if k == 0 or len(rest) % n:
            continue
        runs = [rest[i * k : (i + 1) * k] for i in range(n)]
        if all(_kinds(r) == _kinds(runs[0]) for r in runs):
            lead = p // n
            return [ops[i * lead : (i + 1) * lead] + r for i, r in enumerate(runs)]
    return None


def _kinds(ops: list[tuple[str, float]]) -> list[str]:
    return [name.split(" (")[0] for name, _ in ops]


MEASURE_LAYERS = {"onnxruntime": onnx_layers, "executorch": executorch_layers}


def measure_configs(student: MobileSynthesis, teacher: Generator,
                    configs: Sequence[tuple[Sequence[int], int]], runtime: str, threads: int,
                    repeats: int, workdir: Path, seconds: float | None = None) -> list[float]:
    """Fastest ms of each (widths, resolution) sub-network of ``student``, exported as the
    export stage does (pipeline.export.graph) and run in ``runtime`` (``executorch-int8``:
    quantized as it does too), batch 1: at least ``repeats`` runs, more until ``seconds``."""
    out = []
    with using_threads(threads, executorch=runtime.startswith("executorch")):
        for widths, res in configs:
            target = prepare(subnet(student, list(widths), res), teacher, check=False)
            rt = open_runtime(runtime, target, workdir, "cpu", threads)
            try:
                out.append(measure(rt.runner(target.example(1)), WARMUP, repeats,
                                   seconds=seconds)["min_ms"])
            finally:
                rt.close()
    return out


def check_installed(runtime: str, precision: str = "fp32") -> str | None:
    """Why ``runtime`` cannot run (or quantize, int8) here, or None."""
    from ..export import formats, quantize

    fmt = {"onnxruntime": "onnx", "executorch": "pte"}[runtime]
    return formats.unavailable(fmt) or (quantize.unavailable(fmt) if precision == "int8" else None)


def build_model(cfg: StudentConfig, choices: list[list[int]], resolutions: list[int], runtime: str,
                threads: int = 1, grid_points: int | None = 3, holdout: int = 4,
                repeats: int = 10, seed: int = 0, precision: str = "fp32") -> LatencyModel:
    """Measure the table, fit the overhead on whole configurations (smallest, middle and
    full widths at every resolution) and check it on ``holdout`` random ones."""
    if precision not in PRECISIONS:
        raise BenchError(f"precision {precision!r}: one of {', '.join(PRECISIONS)}")
    why = check_installed(runtime, precision)
    if why:
        raise BenchError(f"{runtime} ({precision}) cannot run here: {why}")
    name = latency_model(runtime, precision)  # pipeline.bench's runtime
    start = time.perf_counter()
    table_choices = [grid(c, grid_points) for c in choices]
    layers = micro_layers(cfg, table_choices, resolutions)
    with tempfile.TemporaryDirectory(prefix="latency-") as tmp:
        entries = MEASURE_LAYERS[runtime](list(layers.values()), cfg.style_dim, threads, repeats,
                                          Path(tmp), precision)
        model = LatencyModel(runtime, precision, threads, arch_of(cfg), table_choices, resolutions,
                             {k.text: ms for k, ms in entries.items()})
        rng = random.Random(f"{seed}/latency")
        ends = [[c[0] for c in choices], [c[len(c) // 2] for c in choices], [c[-1] for c in choices]]
        fit = [(w, r) for r in resolutions for w in ends]
        held = [([rng.choice(c) for c in choices], rng.choice(resolutions)) for _ in range(holdout)]
        student, teacher = timing_student(cfg, seed)
        measured = measure_configs(student, teacher, fit + held, name, threads, repeats, Path(tmp))
    sums = np.array([model.layers_ms(w, r) for w, r in fit])
    (b, a), *_ = np.linalg.lstsq(np.stack([sums, np.ones_like(sums)], 1), np.array(measured[:len(fit)]),
                                 rcond=None)
    model.fit = {"a": float(a), "b": float(b)}
    rows = [{"channels": list(w), "resolution": r, "predicted_ms": model.predict(w, r),
             "measured_ms": ms} for (w, r), ms in zip(held, measured[len(fit):], strict=True)]
    errs = [abs(x["predicted_ms"] - x["measured_ms"]) / x["measured_ms"] for x in rows]
    model.check = {"median_abs_err": float(np.median(errs)), "max_abs_err": float(max(errs)),
                   "configs": rows}
    model.machine = fingerprint()
    model.seconds = time.perf_counter() - start
    log.info("latency model %s: %d entries, median error %.1f %%, max %.1f %% (%.0f s)", name,
             len(entries), 100 * model.check["median_abs_err"], 100 * model.check["max_abs_err"],
             model.seconds)
    return model


# -- caching and loading ---------------------------------------------------------------
def fingerprint() -> dict[str, Any]:
    """The machine and runtime versions a table is valid for (not the current threads)."""
    env = measurements.environment()
    return {**env["machine"], **env["versions"]}


def cache_key(cfg: StudentConfig, choices: list[list[int]], resolutions: list[int], runtime: str,
              precision: str, threads: int, grid_points: int | None, holdout: int, repeats: int,
              seed: int) -> dict[str, Any]:
    """The measurement store's key of a table (pipeline.bench.measurements: this code,
    the runtimes' versions, the machine) with everything it was measured for."""
    settings = {"version": VERSION, "runtime": runtime, "precision": precision, "threads": threads,
                "arch": arch_of(cfg), "choices": choices, "resolutions": resolutions,
                "grid": grid_points, "holdout": holdout, "repeats": repeats, "seed": seed}
    return measurements.key(f"latency-{runtime}-{precision}", settings, __name__)


def cached_model(cache_dir: Path | None, key: dict[str, Any], build: Any,
                 ) -> tuple[LatencyModel, dict[str, Any]]:
    """The model stored under ``key`` or ``build()``'s, stored (``cache_dir`` None: built
    every time); returns (model, provenance: ``cached``, when, where). An entry that does
    not parse or was made for another key is measured again, never trusted."""
    data, made = measurements.cached(cache_dir, key, lambda: build().to_json())
    try:
        return LatencyModel.from_json(data), made
    except (ValueError, TypeError) as e:  # the right key, but not a table of this version
        log.warning("latency cache entry for %s: %s; measuring again", key["kind"], e)
        measurements.path_of(cache_dir, key).unlink(missing_ok=True)
        return cached_model(cache_dir, key, build)


def load_table(path: str | Path, where: str) -> LatencyModel:
    """A table written by ``python -m pipeline.bench latency-table``; ``where`` names the
    params key in errors."""
    try:
        return LatencyModel.from_json(json.loads(Path(path).read_text()))
    except FileNotFoundError:
        raise PipelineError(f"{where}: no such file: {path}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise PipelineError(f"{where}: {path} is not a latency table ({e}); make one with "
                            f"python -m pipeline.bench latency-table") from None


def check_table(model: LatencyModel, cfg: StudentConfig, choices: list[list[int]],
                resolutions: list[int], runtime: str, precision: str, where: str) -> None:
    """A table made for this architecture, runtime and precision, whose entries cover
    every layer of every configuration the search can choose."""
    want = {"runtime": runtime, "precision": precision, **arch_of(cfg)}
    have = {"runtime": model.runtime, "precision": model.precision, **model.arch}
    diff = [f"{k} {have.get(k)!r} (this student: {v!r})" for k, v in want.items() if have.get(k) != v]
    if diff:
        raise PipelineError(f"{where}: the table was made for another student or runtime: "
                            f"{'; '.join(diff)}")
    missing = sorted({key.text for res in resolutions for s in slots(cfg.skip, res)
                      for key in _slot_keys(s, choices) if not _covered(model, key)})
    if missing:
        raise PipelineError(f"{where}: the table has no entries around {len(missing)} layer(s) "
                            f"the search can choose (kind/in/out/resolution): "
                            f"{', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")


def _slot_keys(s: Slot, choices: list[list[int]]) -> list[LayerKey]:
    outs = [0] if s.gene_out is None else choices[s.gene_out]
    return [LayerKey(s.kind, a, b, s.res) for a in choices[s.gene_in] for b in outs]


def _covered(model: LatencyModel, key: LayerKey) -> bool:
    try:
        model.layer(key)
        return True
    except KeyError:
        return False


def widths_choices(cfg: StudentConfig, ratios: Sequence[float]) -> list[list[int]]:
    """The widths a search picks from per gene (pipeline.stages.search.Space's)."""
    return [sorted({quantize(f * r, f) for r in ratios}) for f in cfg.full_widths]


def resolutions_of(cfg: StudentConfig, min_resolution: int | None) -> list[int]:
    return output_resolutions(cfg, min_resolution) if min_resolution else [cfg.resolution]
