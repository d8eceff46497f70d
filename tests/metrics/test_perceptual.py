"""LPIPS with a backbone read from a torchvision-layout file the test writes."""

from __future__ import annotations

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from pipeline.errors import CheckpointError, PipelineError
from pipeline.metrics.perceptual import LPIPS


@pytest.fixture(autouse=True)
def _empty_hub(tmp_path, monkeypatch):
    """No torch hub cache: only the weights a test gives are found."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


@pytest.fixture(scope="module")
def vgg_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    return torchvision.models.vgg16(weights=None).state_dict()


@pytest.fixture
def vgg_file(tmp_path, vgg_state):
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(vgg_state, path)
    return path


def _images(seed: int, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_backbone_tensors_come_from_the_file(vgg_file, vgg_state):
    m = LPIPS("vgg", vgg_file)
    net = m.model.net.state_dict()
    assert len(net) == 26  # 13 convs: every one assigned
    for key, value in net.items():
        assert torch.equal(value, vgg_state["features." + key.split(".", 1)[1]]), key
    assert m.name == "lpips_vgg" and not m.stand_in


def test_distance_zero_for_same_image_positive_otherwise_and_differentiable(vgg_file):
    m = LPIPS("vgg", vgg_file, size=16)
    x, y = _images(0).requires_grad_(True), _images(1)
    assert torch.allclose(m(x, x), torch.zeros(2), atol=1e-6)
    d = m(x, y)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in m.parameters())


def test_stays_frozen_in_eval_inside_a_training_module(vgg_file):
    parent = torch.nn.Module()
    parent.lpips = LPIPS("vgg", vgg_file)
    parent.train()
    assert not parent.lpips.training and not any(mod.training for mod in parent.lpips.modules())


def test_safetensors_file_and_hub_cache_are_used(tmp_path, vgg_state, monkeypatch):
    path = tmp_path / "vgg.bin"  # sniffed by content, not by suffix
    save_file({k: v.contiguous() for k, v in vgg_state.items()}, str(path))
    assert not LPIPS("vgg", path).stand_in
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save(vgg_state, hub / "vgg16-397923af.pth")
    m = LPIPS("vgg")
    assert m.name == "lpips_vgg"
    assert torch.equal(m.model.net.slice1[0].weight, vgg_state["features.0.weight"])


def test_missing_weights_explain_how_to_provide_them():
    with pytest.raises(PipelineError) as e:
        LPIPS("vgg")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "metric_networks.lpips_vgg.weights" in msg
    assert "metric_networks.lpips_vgg.stand_in" in msg
    assert "_randinit" in msg


def test_stand_in_is_labelled():
    m = LPIPS("alex", stand_in=True)
    assert m.stand_in and m.name == "lpips_alex_randinit"
    assert m(_images(0), _images(1)).shape == (2,)


def test_wrong_shaped_weight_names_the_key(tmp_path, vgg_state):
    bad = dict(vgg_state)
    bad["features.2.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(CheckpointError, match=r"features\.2\.weight"):
        LPIPS("vgg", path)


def test_missing_key_and_unreadable_file_are_errors(tmp_path, vgg_state):
    partial = {k: v for k, v in vgg_state.items() if k != "features.28.bias"}
    torch.save(partial, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"features\.28\.bias"):
        LPIPS("vgg", tmp_path / "partial.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        LPIPS("vgg", tmp_path / "junk.pth")


def test_a_stand_in_backbone_is_the_same_network_in_every_construction():
    """Stand-in figures are only comparable across runs if the random network is fixed."""
    import torch

    from pipeline.metrics.perceptual import LPIPS

    torch.manual_seed(1)
    a = LPIPS("alex", None, stand_in=True).state_dict()
    torch.manual_seed(2)
    b = LPIPS("alex", None, stand_in=True).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
