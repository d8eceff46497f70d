"""The distill component: bad teachers and bad params fail with exit 2 and no outputs."""

from __future__ import annotations

import pytest
import yaml

from components.distill import main
from tests.conftest import tiny_params


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run(workdir, params: dict, teacher) -> int:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    return main(["--params", str(workdir / "params.yaml"), "--teacher", str(teacher),
                 "--out", str(workdir / "student"), "--snapshots", str(workdir / "snap"),
                 "--plots", str(workdir / "plots"), "--metrics", str(workdir / "m.json"),
                 "--no-progress"])


@pytest.mark.parametrize("content, expected", [
    (b"\x00" * 64, "unknown checkpoint format"),
    (None, "no such checkpoint file"),
])
def test_a_teacher_that_is_not_a_stylegan2_checkpoint_fails_clearly(workdir, capsys, content,
                                                                     expected):
    teacher = workdir / "teacher.safetensors"
    if content is not None:
        teacher.write_bytes(content)
    assert run(workdir, tiny_params(), teacher) == 2
    assert expected in capsys.readouterr().err
    assert not (workdir / "student").exists() and not (workdir / "m.json").exists()


def test_impossible_hyper_parameters_fail_before_training(workdir, capsys, tiny_teacher):
    from pipeline.checkpoints import save_teacher

    save_teacher(tiny_teacher, workdir / "t.safetensors")
    params = tiny_params()
    params["distill"].update(batch_size=0, betas=[0.9, 1.5])
    assert run(workdir, params, workdir / "t.safetensors") == 2
    err = capsys.readouterr().err
    assert "distill.batch_size" in err and "distill.betas.1" in err
    assert not (workdir / "snap").exists()


def test_missing_lpips_weights_without_stand_in_is_a_clear_error(workdir, capsys, tiny_teacher,
                                                                  monkeypatch):
    from pipeline.checkpoints import save_teacher

    monkeypatch.setenv("TORCH_HOME", str(workdir / "no-hub"))
    save_teacher(tiny_teacher, workdir / "t.safetensors")
    params = tiny_params()
    params["distill"]["perceptual"]["stand_in"] = False
    assert run(workdir, params, workdir / "t.safetensors") == 2
    err = capsys.readouterr().err
    assert "backbone_weights" in err and "stand_in" in err
