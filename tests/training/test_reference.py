"""The learnability reference: the teacher's own architecture, trained from random init in
the distill stage's budget, learns; its CLI scores a student beside it and refuses bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from pipeline.checkpoints import save_teacher
from pipeline.checkpoints.project import save_student
from pipeline.models.mobile import MobileSynthesis, StudentConfig
from pipeline.models.stylegan2 import StyleGAN2Config, random_generator
from pipeline.params import parse_params
from pipeline.training.reference import main, train_reference, validation_latents
from tests.conftest import TINY, tiny_distill, tiny_params


def budget(**overrides) -> dict:
    return tiny_distill(**{"steps": 30, "batch_size": 2, "lr": 0.01, "ema_decay": 0.5,
                           "validation": {"every": 10, "num_samples": 8}, **overrides})


def test_the_reference_learns_the_teacher_and_is_scored_on_the_validation_latents(tiny_teacher):
    cfg = parse_params({**tiny_params(), "distill": budget()}).distill
    latents = validation_latents(tiny_teacher, cfg)
    assert len(latents) == 8
    seen = []
    points = train_reference(tiny_teacher, cfg, latents, on_point=seen.append)  # ~10 s
    assert [p["step"] for p in points] == [0, 10, 20, 30] and seen == points
    assert all(p["psnr_p10"] <= p["psnr_median"] for p in points)
    assert points[-1]["psnr_median"] > points[0]["psnr_median"] + 3, points


@pytest.fixture
def files(tmp_path, tiny_teacher):
    save_teacher(tiny_teacher, tmp_path / "teacher.safetensors")
    t = tiny_teacher.cfg
    save_student(MobileSynthesis(StudentConfig.from_teacher(t.channels, t.resolution, t.style_dim)),
                 tmp_path / "student.safetensors")
    params = {**tiny_params(), "distill": budget(steps=4, validation={"every": 2, "num_samples": 4})}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


def test_the_cli_prints_and_writes_the_student_beside_the_reference(files, capsys):
    args = ["--params", str(files / "params.yaml"), "--teacher", str(files / "teacher.safetensors"),
            "--student", str(files / "student.safetensors"), "--json", str(files / "out.json")]
    assert main(args) == 0
    out = json.loads((files / "out.json").read_text())
    assert out["steps"] == 4 and out["validation_samples"] == 4
    assert [p["step"] for p in out["reference"]] == [0, 2, 4]
    assert {"psnr_median", "psnr_p10"} <= out["student"].keys() <= {"path", "psnr_median", "psnr_p10"}
    assert out["mean_image"]["psnr_median"] > 0
    printed = capsys.readouterr().out
    assert "teacher's mean image" in printed and "student" in printed and "step      4" in printed


def test_the_cli_names_what_is_wrong(files, tmp_path, capsys):
    base = ["--params", str(files / "params.yaml"), "--teacher", str(files / "teacher.safetensors")]
    assert main([*base[:2], "--teacher", str(tmp_path / "missing.safetensors")]) == 1
    assert "missing.safetensors" in capsys.readouterr().err
    other = random_generator(StyleGAN2Config.config_f(**{**TINY, "resolution": 16}), seed=0).cfg
    save_student(MobileSynthesis(StudentConfig.from_teacher(other.channels, 16, other.style_dim)),
                 tmp_path / "other.safetensors")
    assert main([*base, "--student", str(tmp_path / "other.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "other.safetensors" in err and "16x16" in err and "32x32" in err
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--steps", "0"])
    assert exit_.value.code == 2 and "--steps" in capsys.readouterr().err
    assert not (files / "out.json").exists()
