"""A folder of real images, for the discriminator's real set (BlazeStyleGAN).

Images are converted to RGB, centre-cropped to a square and resized (antialiased
bilinear) to the generator's resolution, so any mix of sizes is accepted; a file
that cannot be decoded is an error naming it.

Training draws batches with :meth:`RealImages.batches`: a ``DataLoader`` decodes them in
worker processes, off the training thread. Which images make the batch of step ``s``
depends only on ``(seed, s)`` (drawn with replacement from a generator seeded by both),
so an iterator started at a resumed step yields exactly the batches an uninterrupted
run draws there, and the number of workers does not change them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset, Sampler

from .errors import PipelineError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


class RealImages:
    def __init__(self, folder: str | Path, resolution: int, check: int = 64) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise PipelineError(f"{self.folder}: real-image folder does not exist")
        self.files = sorted(p for p in self.folder.rglob("*") if p.suffix.lower() in EXTENSIONS)
        if not self.files:
            raise PipelineError(
                f"{self.folder}: no images ({', '.join(sorted(EXTENSIONS))}) in the real-image folder"
            )
        self.resolution = resolution
        for path in self.files[:check]:  # fail before training, not at step 10k
            self.load(path)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: Path) -> torch.Tensor:
        """One image as [3, R, R] in [-1, 1]."""
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
        except (UnidentifiedImageError, OSError) as e:
            raise PipelineError(f"{path}: unreadable image ({e})") from None
        x = torch.from_numpy(rgb).permute(2, 0, 1) / 127.5 - 1.0
        h, w = x.shape[1:]
        side = min(h, w)
        x = x[:, (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        if side != self.resolution:
            x = F.interpolate(x[None], size=self.resolution, mode="bilinear",
                              antialias=True, align_corners=False)[0]
        return x

    def step_indices(self, batch_size: int, step: int, seed: int) -> list[int]:
        """The images of step ``step``'s batch: a function of ``(seed, step)`` only."""
        rng = np.random.default_rng([seed, step])
        return rng.integers(len(self.files), size=batch_size).tolist()

    def batches(self, batch_size: int, start_step: int, seed: int,
                workers: int = 2) -> Iterator[torch.Tensor]:
        """Endless ``[batch_size, 3, R, R]`` batches for steps ``start_step``, ``start_step + 1``,
        ..., decoded by ``workers`` processes (0: on the calling thread), in step order."""
        if batch_size < 1 or start_step < 0 or seed < 0 or workers < 0:
            raise ValueError(f"batches(batch_size={batch_size}, start_step={start_step}, "
                             f"seed={seed}, workers={workers}): expected batch_size >= 1 and "
                             f"the others >= 0")
        sampler = _StepBatches(self, batch_size, start_step, seed)
        # A private generator for the loader's own seed draw: the global torch RNG (part of
        # a training snapshot) must not depend on when the iterator started.
        return _endless(DataLoader(_Decoded(self), batch_sampler=sampler, num_workers=workers,
                                   generator=torch.Generator().manual_seed(seed)))


def _endless(loader: DataLoader) -> Iterator[torch.Tensor]:
    """The loader's batches; the workers start at the first ``next`` and stop at ``close()``
    (or when the iterator is garbage collected)."""
    it = iter(loader)
    try:
        yield from it
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)  # only the multi-process iterator
        if shutdown is not None:
            shutdown()


class _Decoded(Dataset):
    """Image ``i`` of the folder, decoded (in a DataLoader worker)."""

    def __init__(self, images: RealImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images.load(self.images.files[i])


class _StepBatches(Sampler[list[int]]):
    """Index batches of steps ``start_step``, ``start_step + 1``, ... without end."""

    def __init__(self, images: RealImages, batch_size: int, start_step: int, seed: int) -> None:
        self.images, self.batch_size, self.start_step, self.seed = images, batch_size, start_step, seed

    def __iter__(self) -> Iterator[list[int]]:
        step = self.start_step
        while True:
            yield self.images.step_indices(self.batch_size, step, self.seed)
            step += 1
