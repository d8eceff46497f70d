"""A student's file (pipeline.checkpoints.project) rebuilds what was saved: folded
students, and files written before the config had ``input_layer``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from pipeline.checkpoints.project import (
    CONFIG_KEY,
    FORMAT_KEY,
    STUDENT_FORMAT,
    load_student,
    save_student,
)
from pipeline.models.mobile import (
    MobileSynthesis,
    ModulatedDenseConv2d,
    ModulatedDWConv2d,
    StudentConfig,
    fold_demodulation,
)
from pipeline.models.stylegan2 import StyleGAN2Config

TEACHER = StyleGAN2Config.config_f(32, channel_max=16, style_dim=8, n_mlp=1)


def student(**kw) -> MobileSynthesis:
    torch.manual_seed(0)
    net = MobileSynthesis(StudentConfig.from_teacher(TEACHER.channels, 32, 8, **kw))
    with torch.no_grad():  # trained-like fused constants and noise strengths
        for name, p in net.named_parameters():
            if name.endswith(("style_inv", "noise.weight")):
                p.uniform_(0.5, 2.0)
    return net.eval()


def inputs():
    g = torch.Generator().manual_seed(1)
    wplus = torch.randn(2, TEACHER.n_latent, 8, generator=g)
    return wplus, [torch.randn(2, 1, r, r, generator=g) for r in TEACHER.noise_resolutions()]


@pytest.mark.parametrize("input_layer", ["dense", "separable"])
def test_a_folded_student_saves_and_reloads_to_the_same_images(tmp_path, input_layer):
    folded = fold_demodulation(student(input_layer=input_layer))
    save_student(folded, tmp_path / "s.safetensors")
    loaded, _ = load_student(tmp_path / "s.safetensors")
    assert loaded.cfg == folded.cfg and loaded.cfg.demodulation == "folded"
    wplus, noise = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(wplus, noise), folded(wplus, noise))


def test_a_file_without_input_layer_loads_as_separable(tmp_path):
    """Files written before the dense 4x4 layer: their config lacks the key, their weights
    are a DW-separable 4x4 conv's."""
    old = student(input_layer="separable")
    cfg = json.loads(old.cfg.model_dump_json())
    del cfg["input_layer"]
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in old.state_dict().items()}, str(path),
              metadata={FORMAT_KEY: STUDENT_FORMAT, CONFIG_KEY: json.dumps(cfg)})
    loaded, _ = load_student(path)
    assert loaded.cfg.input_layer == "separable"
    assert isinstance(loaded.conv1.conv, ModulatedDWConv2d)
    wplus, noise = inputs()
    with torch.no_grad():
        assert torch.equal(loaded(wplus, noise), old(wplus, noise))
    save_student(student(), path)  # a new file names its (default, dense) layer
    assert isinstance(load_student(path)[0].conv1.conv, ModulatedDenseConv2d)
