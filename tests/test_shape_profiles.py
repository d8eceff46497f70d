"""The real profiles' shapes on this machine: distill at the 1024 architecture within a
memory bound, and the 256 shape profile through all five stages as users run it
(``make repro PROFILE=ffhq256-shape``). Memory is asserted, never time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from pipeline.checkpoints.project import save_teacher
from pipeline.models.stylegan2 import StyleGAN2Config, random_generator
from pipeline.params import deep_merge, parse_params
from pipeline.stages import STAGES
from tests.conftest import REPO, copy_repo, env_with_venv, tiny_params

pytestmark = pytest.mark.slow

DISTILL_1024_MAX_RSS_GB = 8.0  # measured: about 5 GB (peak of the whole stage process)


def shape_params(profile: str) -> dict:
    """params.yaml with a shape profile applied, as ``make repro PROFILE=...`` would."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_merge(base, yaml.safe_load((REPO / "profiles" / f"{profile}.yaml").read_text()))


def test_shape_profiles_keep_the_real_architectures():
    """The shape checks are the real profiles' networks, only with tiny counts."""
    for shape, real in (("ffhq1024-shape", "ffhq1024"), ("ffhq256-shape", "ffhq256")):
        params = parse_params(shape_params(shape))
        assert params.profile == shape and params.fetch_teacher.is_random
        real_params = parse_params(shape_params(real))
        assert params.distill.adversarial.channel_max == real_params.distill.adversarial.channel_max
        assert params.search.min_resolution == real_params.search.min_resolution
        assert params.distill.loss == real_params.distill.loss  # the papers' objective
        assert real_params.distill.loss.gan and real_params.distill.loss.perceptual
        assert real_params.distill.elastic.consistency_lpips
    arch = parse_params(shape_params("ffhq1024-shape")).fetch_teacher.random
    assert (arch.resolution, arch.channel_multiplier, arch.style_dim, arch.n_mlp) == (1024, 2, 512, 8)


def test_distill_at_the_1024_architecture_runs_in_bounded_memory(tmp_path):
    """Two steps at batch 1 on the config-f 1024 teacher through the stage CLI; the stage
    reports its own cost, and its peak RSS stays under the bound (the calibration once
    pushed 64 images at 1024x1024 through one pass: killed at 24 GB)."""
    params = shape_params("ffhq1024-shape")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    arch = params["fetch_teacher"]["random"]
    cfg = StyleGAN2Config.config_f(arch["resolution"], arch["channel_multiplier"],
                                   channel_max=arch["channel_max"], style_dim=arch["style_dim"],
                                   n_mlp=arch["n_mlp"])
    save_teacher(random_generator(cfg, 0, image_like=False), tmp_path / "teacher.safetensors")
    env = env_with_venv(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
                        PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "components.distill", "--no-progress",
         "--params", str(tmp_path / "params.yaml"), "--teacher", str(tmp_path / "teacher.safetensors"),
         "--out", str(tmp_path / "student"), "--snapshots", str(tmp_path / "snapshots"),
         "--plots", str(tmp_path / "plots"), "--metrics", str(tmp_path / "distill.json")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "distill.json").read_text())
    assert metrics["steps"] == 2 and metrics["seconds"] > 0
    assert 0 < metrics["peak_rss_gb"] < DISTILL_1024_MAX_RSS_GB, metrics["peak_rss_gb"]
    assert "peak_gpu_gb" not in metrics  # CPU run: no GPU figure pretending to be one
    assert "distill: 2 steps x batch 1 at 1024x1024 on cpu" in result.stderr
    assert (tmp_path / "student" / "student.safetensors").exists()


@pytest.mark.timeout(1800)  # as its make repro's own limit: ~14 min beside another test worker
def test_ffhq256_shape_profile_runs_all_five_stages(tmp_path):
    """``make repro PROFILE=ffhq256-shape`` in a copy of the repository: every stage runs at
    the 256 shapes and reports its cost."""
    repo = copy_repo(tmp_path / "repo")
    for env_dir in (".venv", ".tools"):  # the environment `make setup` built, not a new one
        (repo / env_dir).symlink_to(REPO / env_dir)
    env = env_with_venv(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = subprocess.run(["make", "repro", "PROFILE=ffhq256-shape"], cwd=repo, env=env,
                            capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in STAGES:
        metrics = json.loads((repo / "metrics" / f"{stage}.json").read_text())
        assert metrics["seconds"] > 0 and metrics["peak_rss_gb"] > 0, stage
    assert json.loads((repo / "metrics/fetch_teacher.json").read_text())["resolution"] == 256
    evaluated = json.loads((repo / "metrics/evaluate.json").read_text())
    assert set(evaluated["models"]) >= {"teacher", "full", "half", "small"}
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert {"full", "half", "small"} <= set(exported["models"])
    assert yaml.safe_load((repo / "params.yaml").read_text())["profile"] == "ffhq256-shape"


def test_gpu_check_script_runs_and_reports(tmp_path):
    """infra/gpu-check.sh, the check a session with a GPU runs, here on the CPU for 2 steps
    on a tiny profile: it must work before anyone spends device time on it."""
    profile = {"profile": "tiny-shape", "fetch_teacher": tiny_params()["fetch_teacher"],
               "distill": {"lpips": "alex", "adversarial": {"channel_max": 16},
                           "elastic": {"min_resolution": 16}}}
    (tmp_path / "tiny-shape.yaml").write_text(yaml.safe_dump(profile))
    env = env_with_venv(SHAPES=str(tmp_path / "tiny-shape.yaml"), PYTHON=sys.executable,
                        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    result = subprocess.run(["bash", str(REPO / "infra/gpu-check.sh"), "4", str(tmp_path / "out")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (row,) = [line for line in result.stdout.splitlines() if line.startswith("tiny-shape")]
    assert row.split()[1] == "4"  # steps
    assert "GPU check on cpu (fp32)" in result.stdout
    distilled = json.loads((tmp_path / "out/tiny-shape/distill.json").read_text())
    assert distilled["steps"] == 4 and distilled["peak_rss_gb"] > 0
    assert "peak_gpu_gb" not in distilled
