"""distill: train a MobileStyleGAN student from the fetched teacher.

teacher (project format) -> the process group (torchrun) and its device -> LPIPS and
Inception (metric_networks: real weights, or stand-ins that every figure's name says)
-> training loop -> the EMA student (safetensors + architecture), a teacher-vs-student
grid, loss and validation curves. Outputs are written into one folder swapped in
atomically; under torchrun only rank 0 writes.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoints import load_teacher
from ..checkpoints.project import save_student
from ..data import RealImages
from ..errors import PipelineError
from ..images import save_grid
from ..io import atomic_dir, atomic_path, sha256_file, write_json
from ..metrics import stand_in_name
from ..metrics.networks import inception_network, lpips_network
from ..params import Params
from ..training import dist
from ..training.loop import DistillResult, distill
from . import Context, StageResult, option, stand_ins

log = logging.getLogger(__name__)
STUDENT_FILE = "student.safetensors"


NAME = "distill"
SHARED = ("metric_networks",)


@dataclass
class Paths:
    teacher: str = option("artifacts/teacher/teacher.safetensors", "the fetched teacher")
    out: str = option("artifacts/student", "output folder", output=True)
    snapshots: str = option("checkpoints/distill", "resumable training snapshots", output=True)
    plots: str = option("plots/distill", "loss and validation CSV folder", output=True)


def write_curves(result: DistillResult, folder: Path, renames: dict[str, str]) -> None:
    """CSV files `dvc plots` renders: the validation curve and the loss curve. dvc.yaml
    names their columns, so the validation columns are the same whatever network measured
    them (``renames``: lpips_vgg_randinit -> lpips, kid_randinit -> kid)."""
    folder.mkdir(parents=True, exist_ok=True)
    validation = [{next((new + k[len(old):] for old, new in renames.items()
                         if k.startswith(old)), k): v for k, v in row.items()}
                  for row in result.history.validation]
    for name, rows in (("validation.csv", validation), ("losses.csv", result.history.losses)):
        if not rows:
            continue
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with atomic_path(folder / name) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def check_exploded(metrics: dict[str, Any], gate: int | None) -> None:
    """The validation gate: refuse a student that explodes on some latents (nothing is
    written; the snapshots stay, so a longer run resumes from them)."""
    exploded = metrics["exploded_end"]
    if gate is not None and exploded > gate:
        raise PipelineError(
            f"{int(exploded)} of {metrics['validation_samples']} validation samples exploded "
            f"(largest |output| > 1.5x the teacher's), more than "
            f"distill.validation.max_exploded={gate}; no student was written")


def run(params: Params, paths: Paths, ctx: Context) -> StageResult:
    """Train; on rank 0 write the student, its grid and curves. The metric networks are
    built on the device the process group chose (one GPU per process under torchrun)."""
    cfg = params.distill
    loaded = load_teacher(paths.teacher)
    teacher_sha256 = sha256_file(paths.teacher)
    procs = dist.setup()  # before anything goes to a device: each process picks its GPU here
    lpips = lpips_network(params.metric_networks, cfg.lpips, ctx.cache_dir, procs.device)
    features = inception_network(params.metric_networks, ctx.cache_dir, procs.device)
    real = None
    if cfg.adversarial.real_images:
        real = RealImages(cfg.adversarial.real_images, loaded.generator.cfg.resolution)
        log.info("discriminator reals: %d images from %s", len(real), real.folder)
    grids: dict[str, torch.Tensor] = {}
    tracker = ctx.tracker

    def on_log(row: dict[str, float], step: int) -> None:
        if tracker:
            tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step=step)

    def on_validate(figures: dict[str, float], step: int, pairs: torch.Tensor) -> None:
        grids["last"] = pairs
        if tracker:
            tracker.log_metrics({f"val/{k}": v for k, v in figures.items()}, step=step)

    try:
        result = distill(cfg, loaded.generator, teacher_sha256, paths.snapshots, lpips, features,
                         procs, real, on_log, on_validate, ctx.progress)
    finally:
        dist.teardown(procs)
    if not procs.main:
        return StageResult(result.metrics)
    check_exploded(result.metrics, cfg.validation.max_exploded)
    metrics = {**result.metrics, "stand_in_lpips": int(lpips.stand_in),
               "stand_in_features": int(features.stand_in)}
    with atomic_dir(paths.out) as tmp:
        save_student(result.student, tmp / STUDENT_FILE, {
            "teacher_sha256": teacher_sha256, "steps": str(cfg.steps), "ema": "true"})
        if "last" in grids:
            save_grid(grids["last"], tmp / "samples.png", nrow=len(grids["last"]) // 2)
        write_json(tmp / "metadata.json", {
            "student": result.student.cfg.model_dump(mode="json"), "teacher": str(paths.teacher),
            "lpips_network": lpips.name, "feature_network": features.name, "metrics": metrics})
    write_curves(result, Path(paths.plots), {lpips.name: "lpips",
                                                       stand_in_name("kid", features.stand_in): "kid"})
    return StageResult(metrics, {paths.out: NAME, paths.plots: f"{NAME}/plots"},
                       {"lpips_network": lpips.name, "feature_network": features.name},
                       stand_ins(lpips, features), summary=[Path(paths.out) / "samples.png"])
