"""Distillation: the student learns the teacher, runs resume exactly, DDP works, bad input fails."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from pipeline.checkpoints import save_teacher
from pipeline.checkpoints.project import load_student
from pipeline.errors import PipelineError
from pipeline.models.elastic import subnet, uniform_widths
from pipeline.params import Distill, parse_params
from pipeline.training import checkpoint
from pipeline.training.loop import DivergenceError, Validator, distill, student_config
from tests.conftest import REPO, env_with_venv, tiny_distill, tiny_params


def distill_cfg(**overrides) -> Distill:
    return parse_params({**tiny_params(), "distill": tiny_distill(**overrides)}).distill


@pytest.fixture
def helper_nets():
    from pipeline.metrics.inception import InceptionFeatures
    from pipeline.metrics.perceptual import LPIPS
    from pipeline.training import dist

    return (LPIPS("alex", None, stand_in=True, size=32), InceptionFeatures(None, stand_in=True),
            dist.setup())


LP = "lpips_alex_randinit"  # validation LPIPS on a stand-in AlexNet, named as reported


def test_short_distillation_brings_the_student_closer_to_the_teacher(
    tiny_teacher, helper_nets, tmp_path
):
    cfg = distill_cfg(steps=150, batch_size=4, lr=2e-3, ema_decay=0.9, checkpoint_every=150,
                      validation={"every": 75, "num_samples": 16})  # a median of 16: +2.5 dB, 8 left +1.7
    result = distill(cfg, tiny_teacher, "sha", tmp_path / "snap", *helper_nets, progress=False)
    m = result.metrics
    assert m["steps"] == 150 and m["images_per_second"] > 0
    assert m[f"{LP}_to_teacher_end"] < 0.85 * m[f"{LP}_to_teacher_start"], m
    assert "kid_randinit_end" in m and "kid_end" not in m  # KID on a stand-in: named, not judged
    assert m["psnr_to_teacher_end"] > m["psnr_to_teacher_start"] + 2 and m["validation_samples"] == 16
    assert m["psnr_to_teacher_p10_end"] <= m["psnr_to_teacher_end"] and m["exploded_end"] >= 0
    assert m["psnr_mean_image_p10"] <= m["psnr_mean_image"] < 100  # the constant to beat
    assert m["pixel_l1_end"] < 0.9 * m["pixel_l1_start"], m  # it starts near a black image
    assert m["ssim_to_teacher_end"] > m["ssim_to_teacher_start"], m  # weight-free, like PSNR
    assert m["ssim_to_teacher_p10_end"] <= m["ssim_to_teacher_end"] and "ms_ssim_to_teacher_end" not in m
    assert [row["step"] for row in result.history.validation] == [0, 75, 150]


def test_elastic_training_trains_the_sub_networks(tiny_teacher, helper_nets, tmp_path):
    """Adaptive-channel training: the smallest sub-network (uniform ratio 0.25) gets
    steadily closer to the teacher while it shares its weights with the full network."""
    cfg = distill_cfg(steps=120, batch_size=4, lr=2e-3, ema_decay=0.9, checkpoint_every=120,
                      validation={"every": 40, "num_samples": 8},
                      elastic={"enabled": True, "sampling": "uniform", "ratios": [0.25, 1.0]})
    result = distill(cfg, tiny_teacher, "sha", tmp_path, *helper_nets, progress=False)
    logged = set().union(*result.history.losses)
    assert {"consistency_mse", "consistency_lpips", "gan_d"} <= logged
    rows = result.history.validation
    assert f"{LP}_smallest" not in rows[0] and all(f"{LP}_smallest" in r for r in rows[1:])
    assert rows[-1]["pixel_l1_smallest"] < 0.97 * rows[1]["pixel_l1_smallest"], rows
    assert rows[-1]["psnr_median_smallest"] > rows[1]["psnr_median_smallest"], rows
    assert rows[-1]["pixel_l1"] < rows[0]["pixel_l1"], rows  # the full network still learns
    smallest = uniform_widths(result.student.cfg, 0.25)
    validator = Validator(tiny_teacher, cfg, *helper_nets[:2], torch.device("cpu"))
    ours = validator(subnet(result.student, smallest))
    assert ours[LP] == pytest.approx(result.metrics[f"{LP}_to_teacher_smallest_end"], abs=1e-6)


@pytest.mark.parametrize("student", [{}, {"skip": True, "head": "uptorgb", "init": "teacher"}])
def test_multi_resolution_elastic_steps_with_a_conditioned_discriminator(
    tiny_teacher, helper_nets, tmp_path, student
):
    """Sandwich sampling down to 8x8: every architecture trains (and D sees its code);
    also with output skips, UpToRGB heads (wavelet losses on the images' DWT) and the
    teacher's 4x4 stage."""
    elastic = {"enabled": True, "min_resolution": 8, "sampling": "sandwich"}
    cfg = distill_cfg(steps=16, elastic=elastic, log_every=1, loss={"gan": 0.1}, student=student)
    result = distill(cfg, tiny_teacher, "sha", tmp_path, *helper_nets, progress=False)
    rows = result.history.losses
    assert sum("consistency_mse" in r for r in rows) >= 3  # sub-networks were sampled ...
    assert sum("consistency_mse" not in r for r in rows) >= 1  # ... and the full one
    assert all(math.isfinite(v) for r in rows for v in r.values())
    assert result.metrics[f"{LP}_to_teacher_smallest_end"] > 0


def _stage_env(tmp_path: Path) -> dict[str, str]:
    return env_with_venv(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
                         OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))


def _write_stage_inputs(tmp_path: Path, teacher, **overrides) -> list[str]:
    save_teacher(teacher, tmp_path / "teacher.safetensors")
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({**tiny_params(), "distill": tiny_distill(**overrides)}))
    return ["--params", str(tmp_path / "params.yaml"), "--teacher",
            str(tmp_path / "teacher.safetensors"), "--no-progress"]


def _outputs(tmp_path: Path, name: str) -> list[str]:
    return ["--out", str(tmp_path / name / "student"), "--snapshots", str(tmp_path / name / "snap"),
            "--plots", str(tmp_path / name / "plots"),
            "--metrics", str(tmp_path / name / "distill.json")]


def _student_state(path: Path) -> dict[str, torch.Tensor]:
    return load_student(path / "student" / "student.safetensors")[0].state_dict()


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tiny_teacher, tmp_path):
    """kill -9, then the same command: it resumes to the weights of an uninterrupted run,
    sweeps the killed run's temporary folder and closes its MLflow run as KILLED."""
    args = _write_stage_inputs(tmp_path, tiny_teacher, steps=12, checkpoint_every=2)
    env, cmd = _stage_env(tmp_path), [sys.executable, "-m", "components.distill", *args]
    subprocess.run([*cmd, *_outputs(tmp_path, "straight")], env=env, cwd=tmp_path, check=True,
                   capture_output=True, timeout=600)

    proc = subprocess.Popen([*cmd, *_outputs(tmp_path, "killed")], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    snap = tmp_path / "killed" / "snap"
    deadline = time.monotonic() + 300
    while not any(p.name >= "step-00000004.pt" for p in checkpoint.snapshots(snap)):
        assert proc.poll() is None and time.monotonic() < deadline, "no snapshot appeared"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(int(p.name[5:13]) for p in checkpoint.snapshots(snap))
    assert killed_at < 12 and not (tmp_path / "killed" / "student").exists()
    assert list((tmp_path / ".tmp" / "distill").iterdir())  # what the killed run left
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    (abandoned,) = mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list",
                                      filter_string="attributes.status = 'RUNNING'")

    resumed = subprocess.run([*cmd, *_outputs(tmp_path, "killed")], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    metrics = json.loads((tmp_path / "killed" / "distill.json").read_text())
    assert metrics["resumed_from_step"] == killed_at
    a, b = _student_state(tmp_path / "straight"), _student_state(tmp_path / "killed")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / ".tmp").exists()
    assert not [p for p in tmp_path.rglob("*.tmp")]
    closed = mlflow.get_run(abandoned.info.run_id)
    assert closed.info.status == "KILLED" and closed.data.tags["error"].startswith("abandoned")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_run_says_what_is_kept_in_one_line(tiny_teacher, tmp_path, sig):
    """Ctrl-C, or SIGTERM from a scheduler: exit 130, one line naming the step and the
    snapshot a rerun resumes from (no traceback), no student written, MLflow run KILLED."""
    import mlflow

    args = _write_stage_inputs(tmp_path, tiny_teacher, steps=400, checkpoint_every=2)
    env = _stage_env(tmp_path)
    # As from a terminal, even when the suite runs as a background job (which starts
    # children with SIGINT ignored, so Python would install no Ctrl-C handler).
    proc = subprocess.Popen([sys.executable, "-m", "components.distill", *args,
                             *_outputs(tmp_path, "run")], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    snap, deadline = tmp_path / "run" / "snap", time.monotonic() + 300
    while not checkpoint.snapshots(snap):
        assert proc.poll() is None and time.monotonic() < deadline, "no snapshot appeared"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr
    (line,) = [x for x in stderr.splitlines() if x.startswith("distill: ")]
    assert "interrupted at step" in line and "run again to resume from it" in line
    assert checkpoint.snapshots(snap)[-1].name in line
    assert not (tmp_path / "run" / "student").exists()
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    (run,) = mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list")
    assert run.info.status == "KILLED"


@pytest.mark.slow
def test_two_processes_train_with_torchrun_and_gloo(tiny_teacher, tmp_path):
    args = _write_stage_inputs(tmp_path, tiny_teacher, steps=4, batch_size=4)
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "components.distill", *args, *_outputs(tmp_path, "ddp")],
        env=_stage_env(tmp_path), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "distill.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4
    assert (tmp_path / "ddp" / "student" / "student.safetensors").exists()


def test_divergence_stops_with_a_clear_error_and_keeps_the_last_good_snapshot(
    tiny_teacher, helper_nets, tmp_path, monkeypatch
):
    from pipeline.training import loss as loss_module

    real_loss = loss_module.DistillLoss.generator_loss
    calls = {"n": 0}

    def exploding(self, *a, **kw):
        total, parts = real_loss(self, *a, **kw)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] == 5 else total), parts

    monkeypatch.setattr(loss_module.DistillLoss, "generator_loss", exploding)
    cfg = distill_cfg(steps=8, checkpoint_every=2)
    with pytest.raises(DivergenceError, match=r"loss became nan at step 5.*step-00000004\.pt"):
        distill(cfg, tiny_teacher, "sha", tmp_path / "snap", *helper_nets, progress=False)
    assert [p.name for p in checkpoint.snapshots(tmp_path / "snap")] == [
        "step-00000002.pt", "step-00000004.pt"]


def test_a_run_resumed_at_its_last_step_still_gives_its_grid_and_throughput(
    tiny_teacher, helper_nets, tmp_path
):
    """Rerunning a finished run trains nothing, but the caller still gets the EMA student's
    grid and the run's images per second (over the run that did the training)."""
    cfg = distill_cfg(steps=2, checkpoint_every=2)
    first = distill(cfg, tiny_teacher, "sha", tmp_path / "snap", *helper_nets, progress=False)
    grids = []
    again = distill(cfg, tiny_teacher, "sha", tmp_path / "snap", *helper_nets,
                    on_validate=lambda figures, step, pairs: grids.append((step, pairs)),
                    progress=False)
    assert again.metrics["resumed_from_step"] == 2
    assert [step for step, _ in grids] == [2] and grids[0][1].ndim == 4
    assert again.metrics["images_per_second"] > 0
    assert again.metrics["psnr_to_teacher_end"] == first.metrics["psnr_to_teacher_end"]


def test_a_corrupt_newest_snapshot_falls_back_to_the_previous_one(
    tiny_teacher, helper_nets, tmp_path
):
    cfg = distill_cfg(steps=4, checkpoint_every=2)
    distill(cfg, tiny_teacher, "sha", tmp_path / "snap", *helper_nets, progress=False)
    newest = checkpoint.snapshots(tmp_path / "snap")[-1]
    newest.write_bytes(newest.read_bytes()[:1000])  # torn write from another tool
    longer = distill_cfg(steps=6, checkpoint_every=2)
    result = distill(longer, tiny_teacher, "sha", tmp_path / "snap", *helper_nets,
                     progress=False)
    assert result.metrics["resumed_from_step"] == 2
    for path in checkpoint.snapshots(tmp_path / "snap"):
        path.write_bytes(b"garbage")
    with pytest.raises(PipelineError, match="no readable snapshot"):
        distill(longer, tiny_teacher, "sha", tmp_path / "snap", *helper_nets, progress=False)


def test_snapshots_from_other_settings_are_moved_aside_not_resumed(
    tiny_teacher, helper_nets, tmp_path
):
    distill(distill_cfg(steps=2, checkpoint_every=2), tiny_teacher, "sha", tmp_path / "snap",
            *helper_nets, progress=False)
    result = distill(distill_cfg(steps=2, checkpoint_every=2, lr=1e-4), tiny_teacher, "sha",
                     tmp_path / "snap", *helper_nets, progress=False)
    assert result.metrics["resumed_from_step"] == 0
    assert len(list((tmp_path / "snap").glob("stale-*/step-*.pt"))) == 1


def test_student_settings_that_do_not_fit_the_teacher_name_the_key(tiny_teacher):
    with pytest.raises(PipelineError, match="distill.student does not fit the 32x32 teacher"):
        student_config(distill_cfg(student={"channels": {4: 8, 8: 8}}), tiny_teacher)
    with pytest.raises(PipelineError, match="distill.student.init: teacher needs distill.student"
                       ".input_layer: dense and the teacher's 32 channels at 4x4, got separable"):
        student_config(distill_cfg(student={"init": "teacher", "input_layer": "separable"}),
                       tiny_teacher)


def test_an_empty_real_image_folder_fails_before_training(tmp_path):
    from pipeline.data import RealImages

    (tmp_path / "reals").mkdir()
    with pytest.raises(PipelineError, match="no images"):
        RealImages(tmp_path / "reals", 32)
    (tmp_path / "reals" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(PipelineError, match="broken.png: unreadable image"):
        RealImages(tmp_path / "reals", 32)


def test_snapshots_made_by_other_training_code_are_not_resumed(
    tiny_teacher, helper_nets, tmp_path, monkeypatch
):
    from pipeline.training import loop

    distill(distill_cfg(steps=2, checkpoint_every=2), tiny_teacher, "sha", tmp_path / "snap",
            *helper_nets, progress=False)
    monkeypatch.setattr(loop, "code_digest", lambda: "changed-training-code")
    result = distill(distill_cfg(steps=2, checkpoint_every=2), tiny_teacher, "sha",
                     tmp_path / "snap", *helper_nets, progress=False)
    assert result.metrics["resumed_from_step"] == 0


def test_the_snapshot_digest_covers_exactly_the_training_code():
    """Editing an unrelated file (a metric the step does not use, another stage, the fetch
    layer) must not discard a multi-day run's snapshots; editing the step's code must."""
    from pipeline.code import ROOT
    from pipeline.training import loop

    code = {p.relative_to(ROOT).as_posix() for p in loop.training_code()}
    for used in ("pipeline/training/loop.py", "pipeline/training/loss.py",
                 "pipeline/models/mobile.py", "pipeline/models/sampling.py",
                 "pipeline/metrics/perceptual.py", "pipeline/metrics/fixed_latents.py"):
        assert used in code
    for unrelated in ("pipeline/metrics/fid.py", "pipeline/stages/export.py", "pipeline/cost.py",
                      "pipeline/fetch/http.py", "pipeline/params.py", "pipeline/export/graph.py"):
        assert unrelated not in code



def test_the_cosine_schedule_starts_at_lr_halves_midway_and_ends_near_zero():
    from pipeline.params import Distill
    from pipeline.training.loop import generator_lr

    cfg = Distill(lr=0.02, steps=100, lr_schedule="cosine")
    assert generator_lr(cfg, 1) == pytest.approx(0.02)
    assert generator_lr(cfg, 51) == pytest.approx(0.01)
    assert 0 < generator_lr(cfg, 100) < 1e-5
    assert generator_lr(cfg.model_copy(update={"lr_schedule": "constant"}), 100) == 0.02
