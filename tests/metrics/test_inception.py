"""pytorch-fid Inception features with weights from a file the test writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.errors import CheckpointError, PipelineError
from pipeline.metrics.inception import InceptionFeatures


@pytest.fixture(autouse=True)
def _empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def _file_state(tmp_path) -> tuple[dict[str, torch.Tensor], Path]:
    """A file in pt_inception-2015-12-05's layout (the bare FID network), values shifted
    so that loading it visibly replaces the random init."""
    from pipeline.metrics import inception

    with inception._weights_from(None, seed=3) as fid:
        net = fid.fid_inception_v3()
    state = {k: v + 0.01 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return state, path


def test_weights_from_file_give_2048_features(tmp_path):
    state, path = _file_state(tmp_path)
    m = InceptionFeatures(path)
    assert m.name == "inception" and not m.stand_in
    assert torch.equal(m.net.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    feats = m(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()


def test_stand_in_is_labelled_and_deterministic():
    a, b = InceptionFeatures(stand_in=True), InceptionFeatures(stand_in=True)
    assert a.name == "inception_randinit" and a.stand_in
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(a(x), b(x))
    parent = torch.nn.Module()
    parent.f = a
    parent.train()
    assert not any(mod.training for mod in a.modules())


def test_missing_weights_error_mentions_stand_in():
    with pytest.raises(PipelineError, match="stand_in") as e:
        InceptionFeatures()
    assert "pt_inception-2015-12-05-6726825d.pth" in str(e.value)


def test_wrong_weights_name_the_key(tmp_path):
    state, path = _file_state(tmp_path)
    state["Mixed_7c.branch1x1.conv.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"Mixed_7c\.branch1x1\.conv\.weight"):
        InceptionFeatures(path)


def test_stand_in_features_tell_distributions_apart():
    """A random Inception must still carry signal: KID ~0 between two draws of the same
    image distribution, clearly positive against a contrast-reduced one."""
    from pipeline.metrics.distances import kid

    f = InceptionFeatures(stand_in=True)
    g = torch.Generator().manual_seed(0)

    def draw(scale: float):
        return f((torch.rand(48, 3, 32, 32, generator=g) * 2 - 1) * scale).double().numpy()

    a, b, c = draw(1.0), draw(1.0), draw(0.3)
    assert a.std(0).mean() > 1e-3  # not a constant vector
    same, _ = kid(a, b, 10, 48)
    shifted, _ = kid(a, c, 10, 48)
    assert shifted > 100 * abs(same) and shifted > 1e-3
