"""The distill stage: train a MobileStyleGAN student from the fetched teacher.

teacher (project format) -> perceptual and feature networks (real weights, or
stand-ins that every metric name says) -> training loop -> the EMA student
(safetensors + architecture), a teacher-vs-student grid, loss and validation
curves. Outputs are written into one folder swapped in atomically.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import load_teacher
from .checkpoints.project import save_student
from .data import RealImages
from .images import save_grid
from .io import atomic_dir, atomic_path, sha256_file, write_json
from .metrics.inception import InceptionFeatures
from .metrics.perceptual import LPIPS
from .metrics.weights import resolve_weights
from .params import Distill
from .training.loop import DistillResult, distill

log = logging.getLogger(__name__)
STUDENT_FILE = "student.safetensors"


@dataclass
class Networks:
    """Frozen helper networks and whether they run on stand-in weights."""

    lpips: LPIPS
    features: InceptionFeatures

    @property
    def suffix(self) -> str:
        return "_randinit" if self.lpips.stand_in or self.features.stand_in else ""

    def tags(self) -> dict[str, str]:
        return {"lpips_network": self.lpips.name, "feature_network": self.features.name,
                "stand_in_metric_weights": str(bool(self.suffix)).lower()}


def helper_networks(cfg: Distill, cache_dir: str | Path, device: torch.device) -> Networks:
    """LPIPS and Inception with weights from params (path/URL/S3) or the torch hub cache;
    random stand-ins only when params allow it (then labelled ``_randinit``)."""
    p, f = cfg.perceptual, cfg.features
    lpips = LPIPS(p.net, resolve_weights(p.backbone_weights, cache_dir), stand_in=p.stand_in,
                  size=p.size)
    features = InceptionFeatures(resolve_weights(f.weights, cache_dir), stand_in=f.stand_in)
    return Networks(lpips.to(device).eval(), features.to(device).eval())


def write_curves(result: DistillResult, folder: Path) -> None:
    """CSV files `dvc plots` renders: the validation curve and the loss curve."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("validation.csv", result.history.validation),
                       ("losses.csv", result.history.losses)):
        if not rows:
            continue
        fields = list(dict.fromkeys(k for row in rows for k in row))
        with atomic_path(folder / name) as tmp, open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


def run_distill(
    cfg: Distill, teacher_path: str | Path, out_dir: str | Path, snapshot_dir: str | Path,
    plots_dir: str | Path, cache_dir: str | Path, tracker=None, progress: bool = True,
) -> tuple[DistillResult, dict[str, Any]]:
    """Run the stage; returns the result and the metrics (names say if stand-ins were used)."""
    loaded = load_teacher(teacher_path)
    teacher_sha256 = sha256_file(teacher_path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    nets = helper_networks(cfg, cache_dir, device)
    real = None
    if cfg.adversarial.real_images:
        images = RealImages(cfg.adversarial.real_images, loaded.generator.cfg.resolution)
        real = images.sample
        log.info("discriminator reals: %d images from %s", len(images), images.folder)
    grids: dict[str, torch.Tensor] = {}

    def on_log(row: dict[str, float], step: int) -> None:
        if tracker:
            tracker.log_metrics({f"train/{k}": v for k, v in row.items()}, step=step)

    def on_validate(figures: dict[str, float], step: int, pairs: torch.Tensor) -> None:
        grids["last"] = pairs
        if tracker:
            tracker.log_metrics({f"val/{_name(k, nets)}": v for k, v in figures.items()}, step=step)

    result = distill(cfg, loaded.generator, teacher_sha256, snapshot_dir,
                     nets.lpips, nets.features, real, on_log, on_validate, progress)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 writes outputs
        return result, result.metrics
    # The contract's names always; stand-in figures also under names that say so.
    metrics = {**result.metrics, **{_name(k, nets): v for k, v in result.metrics.items()},
               "stand_in_lpips": int(nets.lpips.stand_in),
               "stand_in_features": int(nets.features.stand_in)}
    with atomic_dir(out_dir) as tmp:
        save_student(result.student, tmp / STUDENT_FILE, {
            "teacher_sha256": teacher_sha256, "steps": str(cfg.steps), "ema": "true"})
        if "last" in grids:
            save_grid(grids["last"], tmp / "samples.png", nrow=len(grids["last"]) // 2)
        write_json(tmp / "metadata.json", {
            "student": result.student.cfg.model_dump(mode="json"),
            "teacher": str(teacher_path), **nets.tags(), "metrics": metrics,
        })
    write_curves(result, Path(plots_dir))
    return result, metrics


def _name(metric: str, nets: Networks) -> str:
    """lpips/kid figures computed on stand-in weights say so in their names."""
    if metric.startswith("lpips") and nets.lpips.stand_in:
        return metric.replace("lpips", "lpips_randinit", 1)
    if metric.startswith("kid") and nets.features.stand_in:
        return metric.replace("kid", "kid_randinit", 1)
    return metric
