"""fetch_teacher: obtain a StyleGAN2 teacher, verify it, normalise it.

source -> (download into the content-addressed cache, sha256 check) -> load the
format safely -> write the project format (safetensors + architecture JSON),
a metadata JSON and a sample grid, all into one folder swapped in atomically.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..checkpoints import load_teacher, save_teacher
from ..errors import CheckpointError
from ..fetch import evict, fetch, redact_uri
from ..images import save_grid, teacher_samples
from ..io import atomic_dir, sha256_file, write_json
from ..models.stylegan2 import Generator, StyleGAN2Config, random_generator
from ..params import FetchTeacher, Params
from . import Context, StageResult, option

NAME = "fetch_teacher"
SHARED: tuple[str, ...] = ()
TEACHER_FILE = "teacher.safetensors"
METADATA_FILE = "metadata.json"
SAMPLES_FILE = "samples.png"


@dataclass
class Paths:
    out: str = option("artifacts/teacher", "output folder", output=True)


def parameter_counts(generator: Generator) -> dict[str, int]:
    mapping = sum(p.numel() for p in generator.style.parameters())
    total = sum(p.numel() for p in generator.parameters())
    return {"params": total, "params_mapping": mapping, "params_synthesis": total - mapping}


def obtain_teacher(cfg: FetchTeacher, cache_dir: str | Path, progress: bool = True) -> tuple[Generator, dict[str, Any]]:
    """The teacher and the provenance of where it came from."""
    if cfg.is_random:
        r = cfg.random
        arch = StyleGAN2Config.config_f(
            r.resolution, r.channel_multiplier, r.channel_max, r.style_dim, r.n_mlp
        )
        return random_generator(arch, r.seed), {
            "source": "random:", "format": "random", "random_weights": True,
            "random_seed": r.seed, "source_sha256": None, "source_bytes": 0, "from_cache": False,
        }
    fetched = fetch(
        cfg.source, sha256=cfg.sha256, cache_dir=cache_dir, timeout_s=cfg.download.timeout_s,
        retries=cfg.download.retries, backoff_s=cfg.download.backoff_s, progress=progress,
    )
    try:
        # Errors name the source the user gave, not the cache blob (evicted below anyway).
        loaded = load_teacher(fetched.path, cfg.format, where=fetched.source,
                              format_key="fetch_teacher.format")
    except CheckpointError:
        evict(fetched, cache_dir)  # no cache entry for bytes that are not a usable teacher
        raise
    return loaded.generator, {
        "source": fetched.source, "format": loaded.format, "random_weights": False,
        "source_sha256": fetched.sha256, "source_bytes": fetched.size,
        "sha256_pinned": cfg.sha256 is not None, "from_cache": fetched.from_cache,
        "notes": loaded.notes,
    }


def run(params: Params, paths: Paths, ctx: Context) -> StageResult:
    """Write ``teacher.safetensors``, ``metadata.json`` and ``samples.png`` into
    ``paths.out`` (replaced atomically; nothing is written if any step fails)."""
    cfg, out_dir = params.fetch_teacher, Path(paths.out)
    start = time.perf_counter()
    generator, provenance = obtain_teacher(cfg, ctx.cache_dir, ctx.progress)
    fetch_seconds = time.perf_counter() - start
    counts = parameter_counts(generator)
    arch = generator.cfg
    s = cfg.samples
    images = teacher_samples(generator, s.count, s.seed, s.truncation_psi, s.batch_size)
    if not torch.isfinite(images).all():
        raise ValueError("teacher produced NaN/inf images from the sample seeds")
    metadata: dict[str, Any] = {
        **provenance,
        "architecture": arch.model_dump(mode="json"),
        "channel_multiplier": arch.channel_multiplier(),
        "n_latent": arch.n_latent,
        **counts,
        "samples": s.model_dump(),
        "torch_version": torch.__version__,
        "stylegan_mobile_version": __version__,
    }
    with atomic_dir(out_dir) as tmp:
        header = {"source": redact_uri(str(provenance["source"])),
                  "format": str(provenance["format"]),
                  "random_weights": str(provenance["random_weights"]).lower()}
        save_teacher(generator, tmp / TEACHER_FILE, header)
        save_grid(images, tmp / SAMPLES_FILE, s.nrow)
        metadata["teacher_sha256"] = sha256_file(tmp / TEACHER_FILE)
        write_json(tmp / METADATA_FILE, metadata)
    metrics = {
        **counts,
        "resolution": arch.resolution,
        "n_latent": arch.n_latent,
        "random_weights": int(provenance["random_weights"]),
        "source_bytes": provenance["source_bytes"],
        "from_cache": int(provenance["from_cache"]),
        "fetch_seconds": round(fetch_seconds, 3),
        "sample_std": round(float(images.std()), 6),
    }
    tags = {"teacher.source": redact_uri(str(provenance["source"])),
            "teacher.format": str(provenance["format"]),
            "teacher.sha256": provenance.get("source_sha256") or "none",
            "teacher.resolution": str(arch.resolution)}
    return StageResult(metrics, {out_dir / METADATA_FILE: "teacher", out_dir / SAMPLES_FILE: "teacher"},
                       tags, ["teacher"] if provenance["random_weights"] else [])
