"""export: every model (the full student, and one per searched budget) in every
format, each file checked against PyTorch, a card per model.

    student (EMA) + teacher (W+ layout, fixed noise, mapping) + search configs
      -> per model: sub-network (physically sliced) -> ExportModel per input variant
      -> ONNX / ExecuTorch / Core ML, fp32 and fp16 -> parity -> card
      -> int8 ONNX / ExecuTorch of the primary variant -> vs its fp32 file -> gate
      -> export/<model>/ swapped in atomically, or nothing when any check fails

Without ``configs.json`` (no search stage run) only ``full`` is exported.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from .. import cost, usage
from ..checkpoints import load_teacher
from ..checkpoints.project import load_student
from ..errors import PipelineError
from ..export import card as cards
from ..export.formats import FORMATS, RUNNERS, SUFFIX, Format, export, unavailable
from ..export.graph import ExportModel, InputKind, build, reference
from ..export.quantize import (
    check_calibration,
    int8_quality,
    latent_inputs,
    quantize_onnx,
    quantize_pte,
    speedup,
    to_symmetric,
)
from ..export.quantize import unavailable as int8_unavailable
from ..export.registry import model_name, register_onnx
from ..io import atomic_dir, sha256_file
from ..metrics.networks import lpips_network
from ..metrics.perceptual import LPIPS
from ..models.elastic import subnet
from ..models.mobile import MobileSynthesis
from ..models.stylegan2 import Generator
from ..params import Export, Params
from ..workers import run_all, worker_count
from . import Context, StageResult, compare_with_last_run, option, stand_ins

log = logging.getLogger(__name__)
NAME = "export"
SHARED = ("metric_networks", "evaluate.regression")  # tolerances of the parity verdict
FULL = "full"
INT8_QUALITY = ("lpips", "lpips_max", "psnr", "psnr_min")  # of quantize.int8_quality
FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ExportError(PipelineError):
    """Bad input to the export stage (a checkpoint, a configuration)."""


class ParityError(PipelineError):
    """An exported file does not reproduce PyTorch within the tolerances."""


@dataclass
class Paths:
    student: str = option("artifacts/student/student.safetensors", "the distilled student")
    teacher: str = option("artifacts/teacher/teacher.safetensors", "the fetched teacher")
    search: str = option("artifacts/search/configs.json",
                         "searched configurations (absent: the full student only)")
    evaluate: str = option("metrics/evaluate.json", "evaluate-stage figures for the cards (optional)")
    out: str = option("export", "output folder, one subfolder per model", output=True)


@dataclass
class ModelSpec:
    """One model to export: its name, the PyTorch network and the search figures."""

    name: str
    network: MobileSynthesis
    search: dict[str, Any] = field(default_factory=dict)


# -- inputs ----------------------------------------------------------------------------
def load_inputs(cfg: Export, student_path: Path, teacher_path: Path) -> tuple[MobileSynthesis, Generator]:
    student, header = load_student(student_path)
    if cfg.require_ema and header.get("ema") != "true":
        raise ExportError(f"{student_path}: not EMA weights (header ema={header.get('ema')!r}); "
                          "export takes the distill stage's EMA student (or set "
                          "export.require_ema: false)")
    teacher = load_teacher(teacher_path).generator.eval()
    if student.cfg.resolution != teacher.cfg.resolution or student.cfg.style_dim != teacher.cfg.style_dim:
        raise ExportError(f"{student_path}: the student ({student.cfg.resolution}px, style_dim "
                          f"{student.cfg.style_dim}) was not distilled from {teacher_path} "
                          f"({teacher.cfg.resolution}px, style_dim {teacher.cfg.style_dim})")
    return student, teacher


def model_specs(student: MobileSynthesis, configs_path: Path | None) -> list[ModelSpec]:
    """``full`` and, when ``configs_path`` exists, one sub-network per budget; a
    configuration that does not fit the student is an ExportError naming it."""
    if configs_path is None or not configs_path.is_file():
        log.info("no search configurations (%s): exporting the full student only", configs_path)
        return [ModelSpec(FULL, student)]
    try:
        data = json.loads(configs_path.read_text())
        full, budgets = data.get("full", {}), data.get("budgets", {})
        if not isinstance(full, dict) or not isinstance(budgets, dict):
            raise TypeError("'full' and 'budgets' must be objects")
    except (ValueError, TypeError, AttributeError) as e:
        raise ExportError(f"{configs_path}: not a search configuration file ({e})") from None
    cfg = student.cfg
    where = f"{configs_path}: the search ran on another student"
    if data.get("resolution", cfg.resolution) != cfg.resolution:
        raise ExportError(f"{where}: resolution {data.get('resolution')}, the student's is {cfg.resolution}")
    if full.get("channels", cfg.full_widths) != cfg.full_widths:
        raise ExportError(f"{where}: full channels {full.get('channels')}, the student's are "
                          f"{cfg.full_widths}")
    specs = [ModelSpec(FULL, student, {k: v for k, v in full.items() if k != "channels"})]
    for name, entry in budgets.items():
        if not FOLDER_NAME.match(name) or name == FULL:
            raise ExportError(f"{configs_path}: budget name {name!r} cannot name a folder "
                              f"(letters, digits, _ . -; not {FULL!r})")
        specs.append(ModelSpec(name, sliced(student, entry, f"{configs_path}: budget {name!r}"),
                               {k: v for k, v in entry.items() if k != "channels"}))
    return specs


def sliced(student: MobileSynthesis, entry: Any, where: str) -> MobileSynthesis:
    """The physically sliced sub-network of a search configuration entry."""
    if not isinstance(entry, dict) or not isinstance(entry.get("channels"), list):
        raise ExportError(f"{where}: expected {{'channels': [ints], 'resolution': int, ...}}, "
                          f"got {entry!r}")
    try:
        return subnet(student, entry["channels"], entry.get("resolution")).eval()
    except (ValueError, TypeError) as e:
        why = "; ".join(err["msg"] for err in e.errors()) if isinstance(e, ValidationError) else e
        raise ExportError(f"{where} does not fit the student "
                          f"(channels {student.cfg.full_widths}, resolution "
                          f"{student.cfg.resolution}): {why}") from None


def parity_inputs(teacher: Generator, cfg: Export) -> dict[InputKind, torch.Tensor]:
    """Fixed inputs of every variant from one seed (z, its truncated w, a W+ mixing two
    styles): :func:`~pipeline.export.quantize.latent_inputs` at the parity settings."""
    return latent_inputs(teacher, cfg.parity.samples, cfg.parity.seed, cfg.truncation_psi)


# -- one model ---------------------------------------------------------------------------
def chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int) -> torch.Tensor:
    """``fn`` over ``x`` in chunks of ``size`` samples (what a high resolution holds at once)."""
    return torch.cat([fn(c) for c in x.split(size)])


def export_model(spec: ModelSpec, teacher: Generator, cfg: Export, formats: list[Format],
                 folder: Path, lpips: LPIPS, inputs: dict[InputKind, torch.Tensor],
                 int8_formats: list[Format] = (), int8_inputs: torch.Tensor | None = None,
                 ) -> list[dict[str, Any]]:
    """Write and check every file of one model (and its int8 files in ``int8_formats``,
    calibrated and measured on ``int8_inputs``); returns one record per file."""
    folder.mkdir(parents=True)
    records = []
    for kind in cfg.inputs:
        model = build(spec.network, teacher, kind, cfg.output_range, cfg.truncation_psi)
        x = inputs[kind]
        with torch.no_grad():
            n = cfg.parity.batch_size
            expected = chunked(lambda c, kind=kind: reference(
                spec.network, teacher, kind, c, cfg.output_range, cfg.truncation_psi), x, n)
            graph_err = float((chunked(model, x, n) - expected).abs().max())
        for fp16 in (False, True) if cfg.fp16 else (False,):
            for fmt in formats:
                path = folder / f"{kind}{'.fp16' if fp16 else ''}{SUFFIX[fmt]}"
                log.info("%s: writing %s", spec.name, path.name)
                start = time.perf_counter()
                try:
                    facts = export(fmt, model, path, fp16, cfg.opset)
                except PipelineError:
                    raise
                except Exception as e:  # an exporter's own failure: name the file
                    raise ExportError(f"{spec.name}/{path.name}: {fmt} export failed: "
                                      f"{type(e).__name__}: {e}") from e
                record = {"path": path.name, "format": fmt, "input": kind,
                          "precision": "fp16" if fp16 else "fp32",
                          "bytes": cards.artifact_bytes(path), "torch_graph_max_abs_err": graph_err,
                          "export_seconds": round(time.perf_counter() - start, 2), **facts}
                if fmt in RUNNERS:
                    record.update(check(spec.name, path, fmt, x.half() if fp16 else x, expected,
                                        fp16, cfg, lpips))
                else:
                    record["checked_by"] = "coremltools spec validation (no prediction off macOS)"
                records.append(record)
        if kind == cfg.inputs[0] and int8_inputs is not None:
            records += export_int8(spec.name, model, cfg, int8_formats, folder, lpips, int8_inputs)
    return records


def export_int8(name: str, model: ExportModel, cfg: Export, formats: list[Format], folder: Path,
                lpips: LPIPS, inputs: torch.Tensor) -> list[dict[str, Any]]:
    """int8 files of the primary input variant, calibrated on the first inputs and measured
    against the fp32 file in the same runtime on the others (quality, batch-1 speed-up).
    A file over the gate (``export.int8.max_lpips``, ``min_psnr``) is deleted: not published."""
    q, kind = cfg.int8, model.kind
    calibration, held_out = inputs[: q.calibration_samples], inputs[q.calibration_samples :]
    records = []
    for fmt in formats:
        fp32_path, path = folder / f"{kind}{SUFFIX[fmt]}", folder / f"{kind}.int8{SUFFIX[fmt]}"
        log.info("%s: writing %s", name, path.name)
        start = time.perf_counter()
        try:
            facts = (quantize_pte(model, path, calibration) if fmt == "pte"
                     else quantize_onnx(fp32_path, path, calibration, kind))
            seconds = round(time.perf_counter() - start, 2)
            run = RUNNERS[fmt]
            quality = int8_quality(run(fp32_path, held_out, cfg.parity.batch_size),
                                   run(path, held_out, cfg.parity.batch_size), lpips,
                                   cfg.output_range, cfg.parity.batch_size)
            speed = speedup(fmt, fp32_path, path, held_out, q.threads, q.repeats, q.seconds)
        except PipelineError:
            raise
        except Exception as e:  # a quantizer's or runtime's own failure: name the file
            raise ExportError(f"{name}/{path.name}: int8 {fmt} quantization failed: "
                              f"{type(e).__name__}: {e}") from e
        over = []
        if not quality["lpips"] <= q.max_lpips:
            over.append(f"LPIPS {quality['lpips']:.4f} is over export.int8.max_lpips "
                        f"{q.max_lpips:g} by {quality['lpips'] - q.max_lpips:.4f}")
        if not quality["psnr"] >= q.min_psnr:
            over.append(f"median PSNR {quality['psnr']:.2f} dB is under export.int8.min_psnr "
                        f"{q.min_psnr:g} by {q.min_psnr - quality['psnr']:.2f} dB")
        published = not over
        runtime = "onnxruntime" if fmt == "onnx" else "executorch.runtime"
        records.append({
            "path": path.name, "format": fmt, "input": kind, "precision": "int8",
            "bytes": cards.artifact_bytes(path), "export_seconds": seconds, **facts,
            **{f"{k}_to_fp32": v for k, v in quality.items()}, **speed, "published": published,
            "checked_by": f"{runtime}: against {fp32_path.name} on {len(held_out)} other inputs"})
        if not published:
            log.warning("%s/%s not published: against %s, %s (the fp32 files are published)",
                        name, path.name, fp32_path.name, "; ".join(over))
            path.unlink()
    return records


def check(name: str, path: Path, fmt: Format, x: torch.Tensor, expected: torch.Tensor, fp16: bool,
          cfg: Export, lpips: LPIPS) -> dict[str, Any]:
    """Run ``path`` in its runtime; ParityError when it is off by more than the tolerances."""
    try:
        out = RUNNERS[fmt](path, x, cfg.parity.batch_size).float()
    except Exception as e:
        raise ParityError(f"{name}/{path.name}: {fmt} runtime failed to run it: "
                          f"{type(e).__name__}: {e}") from e
    if out.shape != expected.shape:
        raise ParityError(f"{name}/{path.name}: output shape {list(out.shape)}, "
                          f"expected {list(expected.shape)}")
    err = float((out - expected).abs().max()) if torch.isfinite(out).all() else float("inf")
    with torch.no_grad():
        dist = max(float(lpips(to_symmetric(o, cfg.output_range),
                               to_symmetric(e, cfg.output_range)).max())
                   for o, e in zip(out.split(cfg.parity.batch_size),
                                   expected.split(cfg.parity.batch_size), strict=True))
    p = cfg.parity
    max_err, max_lpips = (p.fp16_max_abs_err, p.fp16_lpips) if fp16 else (p.max_abs_err, p.lpips)
    if not err <= max_err or not dist <= max_lpips:
        raise ParityError(f"{name}/{path.name}: parity check failed against PyTorch: max abs "
                          f"error {err:.3g} (tolerance {max_err:g}), LPIPS {dist:.3g} "
                          f"(tolerance {max_lpips:g})")
    runtime = "onnxruntime" if fmt == "onnx" else "executorch.runtime"
    return {"max_abs_err": err, "lpips": dist, "checked_by": runtime}


def model_card(spec: ModelSpec, teacher: Generator, cfg: Export, records: list[dict[str, Any]],
               skipped: dict[str, str], evaluate: dict[str, Any] | None, lpips: LPIPS,
               source: dict[str, str]) -> dict[str, Any]:
    scfg = spec.network.cfg
    widths = scfg.layer_widths
    counted = cost.count_student(scfg, widths, n_mlp=teacher.cfg.n_mlp)
    counted = {k: v for k, v in counted.items() if isinstance(v, int)}
    r, d = scfg.resolution, scfg.style_dim
    shapes = {"wplus": ["batch", teacher.cfg.n_latent, d], "w": ["batch", d], "z": ["batch", d]}
    low, high = cfg.output_range
    return {
        "name": spec.name,
        "summary": (f"{'The full student' if spec.name == FULL else 'Searched configuration '}"
                    f"{'' if spec.name == FULL else repr(spec.name)}: {r}x{r} RGB from "
                    f"{', '.join(cfg.inputs)}; {', '.join(sorted({a['format'] for a in records}))}."),
        "architecture": {
            "family": "MobileStyleGAN student (Haar wavelet synthesis, DW-separable modulated "
                      f"convs; {scfg.input_layer} 4x4 layer)",
            "head": scfg.head, "input_layer": scfg.input_layer,
            "demodulation": f"{scfg.demodulation}"
            + (" (per style, energy precomputed)" if scfg.demodulation == "exact" else
               " (a constant, folded into the weights)"),
            "skip": scfg.skip,
            "auxiliary_heads": ("every head draws (output skips)" if scfg.skip else
                                "removed (only the last head is in the graph)"),
            "noise": "baked in: strength x the teacher's fixed noise maps",
            "style_dim": d, "channels": widths, "full_channels": scfg.full_widths,
            "sliced": scfg.widths is not None or spec.name != FULL,
            "feature_resolutions": scfg.levels,
        },
        "resolution": r, "teacher_resolution": teacher.cfg.resolution,
        "cost": counted,
        "search": spec.search, "evaluate": evaluate,
        "inputs": [{"name": k, "shape": shapes[k], "dtype": "float32 (float16 in fp16 files)",
                    "description": cards.INPUT_DOC[k]} for k in cfg.inputs],
        "output": {"name": "image", "shape": ["batch", 3, r, r], "layout": "NCHW, RGB",
                   "range": [low, high], "dtype": "float32 (float16 in fp16 ONNX/ExecuTorch files)",
                   "description": "clamped; " + ("(x + 1) / 2 of the student's [-1, 1] image"
                                                 if low == 0 else "the student's image")},
        "truncation_psi": cfg.truncation_psi if "z" in cfg.inputs else None,
        "batch": {"onnx": "dynamic", "pte": 1, "coreml": 1},
        "parity": {**cfg.parity.model_dump(), "lpips_network": lpips.name,
                   "stand_in_lpips": lpips.stand_in},
        "artifacts": records,
        "formats_skipped": skipped,
        "source": source,
    }


# -- the stage ---------------------------------------------------------------------------
def evaluate_figures(path: Path | None, name: str) -> dict[str, Any] | None:
    """The evaluate stage's figures for ``name`` (``models.<name>``; for ``full`` also the
    top-level numbers), when its metrics file exists."""
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except ValueError:
        log.warning("%s: not JSON, evaluate figures left out of the cards", path)
        return None
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    if isinstance(models.get(name), dict):
        return models[name]
    if name == FULL:
        flat = {k: v for k, v in data.items() if isinstance(v, (int, float))}
        return flat or None
    return None


def summary(records: list[dict[str, Any]], primary: InputKind, lpips_name: str) -> dict[str, Any]:
    """metrics/export.json's entry of a model: the primary variant's fp32 figures per format
    (``<format>_max_abs_err``, ``_<lpips name>``, ``_bytes``), then every file's under
    ``variants``; int8 files: ``<format>_int8_lpips`` (mean LPIPS to the fp32 file),
    ``_lpips_max``, ``_psnr`` (median dB), ``_psnr_min``, ``_speedup``, ``_bytes``, ``_published``."""
    out: dict[str, Any] = {}
    variants: dict[str, dict[str, float]] = {}
    for r in records:
        fmt = r["format"]
        if r["precision"] == "int8":  # the primary variant's only
            out.update({f"{fmt}_int8_{k}": r[f"{k}_to_fp32"] for k in INT8_QUALITY},
                       **{f"{fmt}_int8_speedup": r["speedup"], f"{fmt}_int8_bytes": r["bytes"],
                          f"{fmt}_int8_published": int(r["published"])})
            continue
        key = r["input"] + ("_fp16" if r["precision"] == "fp16" else "")
        figures = {f"{fmt}_bytes": r["bytes"]}
        if "max_abs_err" in r:
            figures.update({f"{fmt}_max_abs_err": r["max_abs_err"], f"{fmt}_{lpips_name}": r["lpips"]})
        variants.setdefault(key, {}).update(figures)
        if key == primary:
            out.update(figures)
    return {**out, "variants": variants}


def run(params: Params, paths: Paths, ctx: Context) -> StageResult:
    """Export every model into ``paths.out`` (swapped in only when all checks pass) and
    register every model's primary ONNX file (champion/candidate aliases)."""
    cfg = params.export
    student_path, teacher_path, out_dir = Path(paths.student), Path(paths.teacher), Path(paths.out)
    configs_path = Path(paths.search) if paths.search else None
    evaluate_path = Path(paths.evaluate) if paths.evaluate else None
    student, teacher = load_inputs(cfg, student_path, teacher_path)
    specs = model_specs(student, configs_path)
    skipped = {fmt: why for fmt in cfg.formats if (why := unavailable(fmt))}
    for why in skipped.values():
        log.warning("format not produced: %s", why)
    formats = [f for f in FORMATS if f in cfg.formats and f not in skipped]
    if not formats:
        raise ExportError(f"none of the export formats {cfg.formats} can be produced here: "
                          + "; ".join(skipped.values()))
    int8_formats, int8_inputs = [], None
    for fmt in cfg.int8.formats:
        if fmt not in formats:  # not asked for, or not producible (said above)
            continue
        if why := int8_unavailable(fmt):
            skipped[f"{fmt}-int8"] = why
            log.warning("int8 variant not produced: %s", why)
        else:
            int8_formats.append(fmt)
    if int8_formats:  # checked before any export starts
        q = cfg.int8
        int8_inputs = latent_inputs(teacher, q.calibration_samples + q.eval_samples, q.seed,
                                    q.truncation_psi)[cfg.inputs[0]]
        check_calibration(int8_inputs[: q.calibration_samples], "export.int8 (calibration_samples, "
                          "truncation_psi)")
    lpips = lpips_network(params.metric_networks, cfg.lpips, ctx.cache_dir)
    inputs = parity_inputs(teacher, cfg)
    source = {"student": str(student_path), "student_sha256": sha256_file(student_path),
              "teacher": str(teacher_path), "teacher_sha256": sha256_file(teacher_path)}
    if configs_path is not None and configs_path.is_file():
        source.update(search_configs=str(configs_path), search_configs_sha256=sha256_file(configs_path))
    models: dict[str, Any] = {}
    per_model = len(cfg.inputs) * (2 if cfg.fp16 else 1) * len(formats) + len(int8_formats)
    usage.announce("export", f"{len(specs)} model(s) x {per_model} files at "
                   f"{student.cfg.resolution}x{student.cfg.resolution}, each checked on "
                   f"{cfg.parity.samples} samples ({cfg.parity.batch_size} at a time), "
                   f"{worker_count(cfg.workers, len(specs))} model(s) at a time")
    workers = worker_count(cfg.workers, len(specs))
    with atomic_dir(out_dir) as tmp:
        # models are independent: their files are written and checked in parallel
        all_records = run_all(export_model, [(spec, teacher, cfg, formats, tmp / spec.name, lpips,
                                              inputs, int8_formats, int8_inputs) for spec in specs],
                              workers)
        for spec, records in zip(specs, all_records, strict=True):
            evaluate = evaluate_figures(evaluate_path, spec.name)
            card = model_card(spec, teacher, cfg, records, skipped, evaluate, lpips, source)
            cards.write_card(tmp / spec.name, card)
            models[spec.name] = {**summary(records, cfg.inputs[0], lpips.name),
                                 "params": card["cost"]["params"], "macs": card["cost"]["macs"],
                                 "resolution": card["resolution"]}
    metrics = {"models": models, "formats_skipped": len(skipped), "stand_in_lpips": int(lpips.stand_in)}
    comparison = compare_with_last_run(NAME, metrics, params, ctx)  # the parity error
    tags = {"lpips_network": lpips.name}
    run_id = ctx.tracker.run_id if ctx.tracker else None
    if cfg.registry.enabled:
        for spec in specs:
            if (version := register_onnx(out_dir / spec.name, cfg, run_id, spec.name)) is not None:
                tags[f"registered_model.{spec.name}"] = f"{model_name(cfg, spec.name)}/{version}"
    return StageResult(metrics, {out_dir: NAME}, tags, stand_ins(lpips), comparison=comparison)
