"""The 256 shape profile through all five stages as users run it
(``make repro PROFILE=ffhq256-shape``)."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from pipeline.stages import STAGES
from tests.conftest import REPO, copy_repo, env_with_venv

pytestmark = pytest.mark.slow


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
