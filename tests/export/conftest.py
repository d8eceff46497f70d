"""A tiny trained-looking student (32x32, 16/16/8 channels) and its teacher, in memory
and as the files the export stage reads."""

from __future__ import annotations

import pytest
import torch

from pipeline.models.mobile import Head, MobileSynthesis, StudentConfig
from pipeline.models.stylegan2 import FusedLeakyReLU, NoiseInjection

CHANNELS = {4: 16, 8: 16, 16: 8}


def make_student(teacher, demodulation: str = "fused", head: str = "wavelet",
                 seed: int = 0) -> MobileSynthesis:
    """Random weights, with every term that folding touches made non-trivial (fused
    demodulation constants, noise strengths, biases) and images in about [-1, 1]."""
    cfg = StudentConfig(resolution=teacher.cfg.resolution, style_dim=teacher.cfg.style_dim,
                        channels=CHANNELS, demodulation=demodulation, head=head)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = MobileSynthesis(cfg)
        with torch.no_grad():
            for m in student.modules():
                if hasattr(m, "style_inv"):
                    m.style_inv.uniform_(0.5, 2.0)
                if isinstance(m, NoiseInjection):
                    m.weight.fill_(0.1)
                if isinstance(m, FusedLeakyReLU):
                    m.bias.normal_(0, 0.1)
                if isinstance(m, Head):
                    m.bias.normal_(0, 0.1)  # weights: HEAD_INIT already keeps images near [-1, 1]
    return student.eval()


@pytest.fixture
def tiny_student(tiny_teacher) -> MobileSynthesis:
    return make_student(tiny_teacher)


@pytest.fixture
def export_files(tmp_path, tiny_teacher, tiny_student):
    """(student path, teacher path) as distill and fetch_teacher write them."""
    from pipeline.checkpoints import save_teacher
    from pipeline.checkpoints.project import save_student

    student, teacher = tmp_path / "student.safetensors", tmp_path / "teacher.safetensors"
    save_student(tiny_student, student, {"ema": "true", "steps": "8"})
    save_teacher(tiny_teacher, teacher)
    return student, teacher


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_uri):
    """The export component's working directory, with its own MLflow store."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
