"""The distill component: bad teachers and bad params fail with exit 2 and no outputs."""

from __future__ import annotations

import json

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
    params["metric_networks"]["lpips_alex"]["stand_in"] = False
    assert run(workdir, params, workdir / "t.safetensors") == 2
    err = capsys.readouterr().err
    assert "metric_networks.lpips_alex.weights" in err and "metric_networks.lpips_alex.stand_in" in err
    assert "alexnet-owt-7be5be79.pth" in err


def test_the_metric_networks_go_to_the_device_the_process_group_chose(workdir, tiny_teacher,
                                                                      monkeypatch):
    """Under torchrun each process selects its GPU in dist.setup(); nothing may be moved to
    a device before that, and the networks must land on the chosen one."""
    import torch

    from pipeline import stages
    from pipeline.checkpoints import save_teacher
    from pipeline.params import parse_params
    from pipeline.stages import distill as stage
    from pipeline.training import dist

    events = []
    chosen = dist.Dist(rank=0, world=1, device=torch.device("cpu", 0))

    def setup():
        events.append("setup")
        return chosen

    def networks(kind, real):
        def build(*args):
            events.append((kind, args[-1]))
            return real(*args)
        return build

    class Stop(Exception):
        pass

    def fake_distill(*args, **kw):
        events.append(("distill", args[6]))
        raise Stop

    monkeypatch.setattr(stage.dist, "setup", setup)
    monkeypatch.setattr(stage, "lpips_network", networks("lpips", stage.lpips_network))
    monkeypatch.setattr(stage, "inception_network", networks("inception", stage.inception_network))
    monkeypatch.setattr(stage, "distill", fake_distill)
    save_teacher(tiny_teacher, workdir / "t.safetensors")
    paths = stage.Paths(teacher=str(workdir / "t.safetensors"), out=str(workdir / "out"),
                        snapshots=str(workdir / "snap"), plots=str(workdir / "plots"))
    with pytest.raises(Stop):
        stage.run(parse_params(tiny_params()), paths, stages.Context(workdir / "cache", False))
    assert events == ["setup", ("lpips", chosen.device), ("inception", chosen.device),
                      ("distill", chosen)]


def test_a_student_that_explodes_on_validation_latents_fails_the_gate_and_writes_nothing(
        workdir, capsys, tiny_teacher):
    """A teacher drawing almost black images makes any untrained student 'explode' (its
    largest value is far above 1.5x the teacher's): the gate refuses it, by its key."""
    import copy

    import torch

    from pipeline.checkpoints import save_teacher

    dim = copy.deepcopy(tiny_teacher)
    with torch.no_grad():
        for rgb in [dim.to_rgb1, *dim.to_rgbs]:
            rgb.conv.weight.mul_(1e-4)
            rgb.bias.zero_()
    save_teacher(dim, workdir / "t.safetensors")
    params = tiny_params()
    params["distill"].update(steps=2, validation={"every": 2, "num_samples": 4})
    assert run(workdir, params, workdir / "t.safetensors") == 2
    err = capsys.readouterr().err
    assert "4 of 4 validation samples exploded" in err and "distill.validation.max_exploded=0" in err
    assert not (workdir / "student").exists() and not (workdir / "m.json").exists()
    assert list((workdir / "snap").glob("step-*.pt"))  # kept: a longer run resumes from them

    params["distill"]["validation"]["max_exploded"] = None  # report only
    assert run(workdir, params, workdir / "t.safetensors") == 0
    assert json.loads((workdir / "m.json").read_text())["exploded_end"] == 4
    assert (workdir / "student" / "samples.png").is_file()  # resumed at its last step: still drawn


@pytest.mark.parametrize("where", ["out", "snapshots", "plots", "metrics"])
def test_an_output_that_cannot_be_written_fails_before_any_work(workdir, capsys, tiny_teacher,
                                                                 where):
    """Found before training, not after it: exit 2, one line naming the output."""
    from pipeline.checkpoints import save_teacher

    save_teacher(tiny_teacher, workdir / "teacher.safetensors")
    (workdir / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    (workdir / "blocker").write_text("a file where a folder must go")
    paths = {"out": workdir / "student", "snapshots": workdir / "snap",
             "plots": workdir / "plots", "metrics": workdir / "m.json"}
    paths[where] = workdir / "blocker" / where
    code = main(["--params", str(workdir / "params.yaml"), "--teacher",
                 str(workdir / "teacher.safetensors"), "--no-progress",
                 *(x for k, v in paths.items() for x in (f"--{k}", str(v)))])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert f"{paths[where]}: cannot write this output" in err and "nothing was run" in err
    assert not (workdir / "student").exists() and not (workdir / "snap").exists()
