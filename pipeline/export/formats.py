"""Writing an :class:`~pipeline.export.graph.ExportModel` in each mobile format, and
running the written file in that format's own runtime.

* ``onnx``: ``.onnx``, opset >= 17, dynamic batch; written by ``torch.onnx.export``
  with the TorchScript exporter (the dynamo exporter needs ``onnxscript``, which is not
  a dependency); run in onnxruntime (CPU).
* ``pte``: ExecuTorch ``.pte``, batch 1; ``torch.export`` lowered with the XNNPACK
  delegate; run in ``executorch.runtime``.
* ``coreml``: Core ML ``mlprogram`` ``.mlpackage``, batch 1, iOS 16+; converted by
  coremltools from ``torch.export``; its spec is re-read and validated. Prediction
  needs Apple's Core ML framework (macOS): it is not run here.

fp16 variants: ONNX and ExecuTorch get a half-precision network (float16 input and
output); Core ML gets ``compute_precision=FLOAT16`` (float32 input and output, fp16
weights and arithmetic inside).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ..errors import PipelineError
from .graph import ExportModel, for_runtime

Format = Literal["onnx", "pte", "coreml"]
FORMATS: tuple[Format, ...] = ("onnx", "pte", "coreml")
SUFFIX = {"onnx": ".onnx", "pte": ".pte", "coreml": ".mlpackage"}
OUTPUT_NAME = "image"
# What each format needs importable (exporter and the runtime that checks it).
_NEEDS = {
    "onnx": ("onnx", "onnxruntime"),
    "pte": ("executorch.exir", "executorch.backends.xnnpack.partition.xnnpack_partitioner",
            "executorch.runtime"),
    "coreml": ("coremltools",),
}
log = logging.getLogger(__name__)


class FormatUnavailable(PipelineError):
    """A format cannot be produced here (not installed, or not supported on this platform)."""


def unavailable(fmt: Format) -> str | None:
    """Why ``fmt`` cannot be produced here, or None when it can."""
    return first_unusable(_NEEDS[fmt], fmt)


def first_unusable(modules: tuple[str, ...], what: str) -> str | None:
    """``"<what>: <module> is not usable here (...)"`` for the first of ``modules`` that
    does not import, or None when all do."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as e:  # ImportError, or a native library that fails to load
            return f"{what}: {module} is not usable here ({type(e).__name__}: {e})"
    return None


@contextlib.contextmanager
def _quiet():
    """Exporters warn loudly about deprecations that are not ours to fix, coremltools logs
    every graph pass at INFO, and onnxruntime's quantizer every bias it copies on the root
    logger (a logger's filter sees only records logged on it: ours pass)."""
    ct_log, root = logging.getLogger("coremltools"), logging.getLogger()
    level = ct_log.level
    ct_log.setLevel(logging.WARNING)

    def only_warnings(record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING

    root.addFilter(only_warnings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        ct_log.setLevel(level)
        root.removeFilter(only_warnings)


def example_input(model: ExportModel, fp16: bool, batch: int = 1) -> torch.Tensor:
    x = torch.zeros(model.input_shape(batch))
    return x.half() if fp16 else x


# -- ONNX -----------------------------------------------------------------------------
def export_onnx(model: ExportModel, path: Path, fp16: bool, opset: int) -> dict[str, Any]:
    net = for_runtime(model, "onnxruntime")
    net = net.half() if fp16 else net.float()
    with _quiet(), torch.no_grad():
        torch.onnx.export(net, (example_input(model, fp16, 2),), str(path), opset_version=opset,
                          dynamo=False, input_names=[model.kind], output_names=[OUTPUT_NAME],
                          dynamic_axes={model.kind: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    model.float()
    import onnx

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    return {"opset": opset, "nodes": len(proto.graph.node), "batch": "dynamic"}


def onnx_runner(path: Path, threads: int | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """One onnxruntime CPU session on ``path``: input batch -> image."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or min(2, os.cpu_count() or 1)
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(np.asarray(session.run([OUTPUT_NAME], {name: x.numpy()})[0]))


def run_onnx(path: Path, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Runs ``batch`` samples at a time (None: all at once)."""
    run = onnx_runner(path)
    return torch.cat([run(c) for c in x.split(batch or len(x))])


# -- ExecuTorch -------------------------------------------------------------------------
def export_pte(model: ExportModel, path: Path, fp16: bool) -> dict[str, Any]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    net = for_runtime(model, "xnnpack")
    net = net.half() if fp16 else net.float()
    try:
        with _quiet(), torch.no_grad():
            program = torch.export.export(net, (example_input(model, fp16),))
            edge = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
            facts = pte_facts(edge)
            path.write_bytes(edge.to_executorch().buffer)
    finally:
        model.float()
    return facts


def pte_facts(edge) -> dict[str, Any]:
    """What the XNNPACK delegate took of a lowered program, and what it left outside."""
    calls = [n for n in edge.exported_program().graph.nodes if n.op == "call_function"]
    delegated = [n for n in calls if "executorch_call_delegate" in str(n.target)]
    outside = sorted({str(n.target).rsplit(".", 1)[-1] for n in calls
                      if n not in delegated and "getitem" not in str(n.target)})
    return {"backend": "XnnpackBackend", "batch": 1, "delegate_calls": len(delegated),
            "ops_outside_delegate": outside}


def pte_runner(path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """The program's ``forward`` in ``executorch.runtime``: a batch-1 input -> image."""
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(str(path)).load_method("forward")
    return lambda x: method.execute([x.contiguous()])[0]


def run_pte(path: Path, x: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """Runs batch 1 at a time, whatever ``batch`` (the program is exported for batch 1)."""
    run = pte_runner(path)
    return torch.cat([run(x[i : i + 1]) for i in range(len(x))])


# -- Core ML ----------------------------------------------------------------------------
def export_coreml(model: ExportModel, path: Path, fp16: bool) -> dict[str, Any]:
    import coremltools as ct

    shape = model.input_shape(1)
    with _quiet(), torch.no_grad():
        program = torch.export.export(model.float(), (example_input(model, False),))
        mlmodel = ct.convert(
            program.run_decompositions({}), convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT16 if fp16 else ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS16,
            inputs=[ct.TensorType(name=model.kind, shape=shape, dtype=np.float32)],
            outputs=[ct.TensorType(name=OUTPUT_NAME, dtype=np.float32)],
        )
    mlmodel.short_description = f"StyleGAN2 mobile student, {model.kind} -> RGB image"
    with _quiet():
        mlmodel.save(str(path))
    canonical_mlpackage(path)
    return validate_coreml(path, model)


def canonical_mlpackage(path: Path) -> None:
    """Make a saved .mlpackage's bytes depend only on the model: coremltools names the
    package's items with random UUIDs and writes the spec's metadata map in hash order.
    Items get UUIDs derived from their paths (the manifest only needs them unique and
    consistent) and the spec is re-serialised deterministically (sorted maps)."""
    import uuid

    from coremltools.proto import Model_pb2

    manifest_path = path / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    names = {old: str(uuid.uuid5(uuid.NAMESPACE_URL, f"mlpackage:{item['path']}")).upper()
             for old, item in manifest["itemInfoEntries"].items()}
    manifest["itemInfoEntries"] = {names[k]: v for k, v in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = names[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")
    (spec_path,) = [path / "Data" / item["path"] for item in manifest["itemInfoEntries"].values()
                    if item["path"].endswith(".mlmodel")]
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))


def validate_coreml(path: Path, model: ExportModel) -> dict[str, Any]:
    """Re-read the saved package and check its spec: an ML program with the expected input
    and output. Prediction needs Apple's Core ML framework (macOS): not run here."""
    import coremltools as ct

    mlmodel = ct.models.MLModel(str(path), skip_model_load=True)
    spec = mlmodel.get_spec()
    problems = []
    if spec.WhichOneof("Type") != "mlProgram":
        problems.append(f"model type {spec.WhichOneof('Type')!r}, expected mlProgram")
    inputs = {i.name: list(i.type.multiArrayType.shape) for i in spec.description.input}
    outputs = [o.name for o in spec.description.output]
    if inputs != {model.kind: model.input_shape(1)}:
        problems.append(f"inputs {inputs}, expected {{{model.kind!r}: {model.input_shape(1)}}}")
    if outputs != [OUTPUT_NAME]:
        problems.append(f"outputs {outputs}, expected [{OUTPUT_NAME!r}]")
    ops = sum(len(block.operations) for f in spec.mlProgram.functions.values()
              for block in f.block_specializations.values())
    if ops == 0:
        problems.append("the ML program has no operations")
    if problems:
        raise PipelineError(f"{path}: Core ML validation failed: {'; '.join(problems)}")
    return {"spec_version": spec.specificationVersion, "ml_program_ops": ops, "batch": 1,
            "predicted": False, "note": "Core ML prediction runs only on Apple hardware (macOS); "
            "the package was converted and its spec validated, not run"}


def export(fmt: Format, model: ExportModel, path: Path, fp16: bool, opset: int) -> dict[str, Any]:
    """Write ``model`` as ``fmt`` to ``path``; returns facts about the file for the card."""
    if fmt == "onnx":
        return export_onnx(model, path, fp16, opset)
    if fmt == "pte":
        return export_pte(model, path, fp16)
    return export_coreml(model, path, fp16)


RUNNERS = {"onnx": run_onnx, "pte": run_pte}  # Core ML: no runtime off Apple hardware
