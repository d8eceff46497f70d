"""Real images for the discriminator: decoded off the training thread, drawn by (seed, step)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data import RealImages
from pipeline.errors import PipelineError

SIZES = [(20, 24), (16, 16), (30, 18), (12, 12), (17, 23), (40, 40), (9, 14)]


def _folder(path: Path, sizes=SIZES) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path / f"{i}.png")
    return path


@pytest.fixture
def reals(tmp_path) -> RealImages:
    return RealImages(_folder(tmp_path / "reals"), 16)


def _take(batches, n: int) -> list[torch.Tensor]:
    try:
        return [next(batches) for _ in range(n)]
    finally:
        batches.close()


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_batches_from_a_resumed_step_equal_an_uninterrupted_iterator_advanced_there(reals):
    rng = torch.get_rng_state()
    from_zero = _take(reals.batches(3, 0, seed=5, workers=0), 9)
    resumed = _take(reals.batches(3, 6, seed=5, workers=0), 3)
    assert _same(from_zero[6:], resumed)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG (in snapshots) is untouched
    assert resumed[0].shape == (3, 3, 16, 16) and -1 <= resumed[0].min() <= resumed[0].max() <= 1
    step4 = torch.stack([reals.load(reals.files[i]) for i in reals.step_indices(3, 4, seed=5)])
    assert torch.equal(from_zero[4], step4)
    # A function of (seed, step): it varies with both.
    draws = [reals.step_indices(3, s, seed=5) for s in range(9)]
    assert len({tuple(d) for d in draws}) > 1
    assert draws != [reals.step_indices(3, s, seed=6) for s in range(9)]


def test_worker_processes_give_the_same_batches_as_the_training_thread(reals, monkeypatch):
    inline = _take(reals.batches(4, 2, seed=1, workers=0), 6)
    assert _same(_take(reals.batches(4, 2, seed=1, workers=2), 6), inline)
    # ... and the decoding really happens in another process.
    monkeypatch.setattr(RealImages, "load", lambda self, path: torch.full((1,), float(os.getpid())))
    (pid,) = set(next(reals.batches(2, 0, seed=1, workers=1)).flatten().tolist())
    assert pid != os.getpid()
    (pid,) = set(next(reals.batches(2, 0, seed=1, workers=0)).flatten().tolist())
    assert pid == os.getpid()


def test_an_image_that_breaks_after_the_check_is_named_by_the_worker(tmp_path):
    images = RealImages(_folder(tmp_path / "reals", sizes=[(8, 8)]), 8)
    images.files[0].write_bytes(b"not a png any more")
    with pytest.raises(PipelineError, match=r"0\.png: unreadable image"):
        _take(images.batches(2, 0, seed=0, workers=1), 1)
    with pytest.raises(ValueError, match="workers=-1"):
        images.batches(2, 0, seed=0, workers=-1)


class _PooledFeatures(torch.nn.Module):
    """A KID feature extractor that costs nothing (Inception at 299x299 would dominate)."""

    stand_in = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)


def test_a_resumed_run_with_real_images_ends_with_the_weights_of_an_uninterrupted_one(
    tiny_teacher, tmp_path, monkeypatch
):
    from pipeline.metrics.perceptual import LPIPS
    from pipeline.params import Distill
    from pipeline.training import dist
    from pipeline.training.loop import distill

    nets = LPIPS("alex", None, stand_in=True, size=32), _PooledFeatures()
    procs = dist.Dist(0, 1, torch.device("cpu"))
    images = RealImages(_folder(tmp_path / "reals"), 32)
    started = []
    batches = RealImages.batches
    monkeypatch.setattr(RealImages, "batches", lambda self, n, start, seed, workers: (
        started.append((start, seed, workers)) or batches(self, n, start, seed, workers)))

    def run(steps: int, snap: str):
        cfg = Distill.model_validate({
            "steps": steps, "batch_size": 2, "ema_decay": 0.5, "lpips": "alex", "seed": 3,
            "loss": {"gan": 0.1}, "adversarial": {"channel_max": 16, "r1_every": 2,
                                                  "real_images": str(images.folder),
                                                  "real_workers": 1},
            "validation": {"every": 2, "num_samples": 2, "grid_samples": 2},
            "checkpoint_every": 1, "log_every": 1})
        return distill(cfg, tiny_teacher, "sha", tmp_path / snap, *nets, procs,
                       real_images=images, progress=False)

    whole = run(2, "whole")
    run(1, "parts")
    resumed = run(2, "parts")  # R1 (r1_every=2) on the reals at step 2
    assert resumed.metrics["resumed_from_step"] == 1
    assert started == [(1, 3000, 1), (1, 3000, 1), (2, 3000, 1)]  # each run: its first step
    a, b = whole.student.state_dict(), resumed.student.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
