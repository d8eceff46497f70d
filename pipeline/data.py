"""A folder of real images, for the discriminator's real set (BlazeStyleGAN).

Images are converted to RGB, centre-cropped to a square and resized (antialiased
bilinear) to the generator's resolution, so any mix of sizes is accepted; a file
that cannot be decoded is an error naming it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

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

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        idx = torch.randint(len(self.files), (n,), generator=generator)
        return torch.stack([self.load(self.files[i]) for i in idx.tolist()])
