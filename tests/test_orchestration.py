"""The pipeline as users run it: `dvc repro` in a copy of the repo, `airflow dags test`."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import ENV_BIN, copy_repo, env_with_venv, tiny_params

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd, env, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory) -> Path:
    """One ``dvc repro`` of the tiny pipeline (a latency budget too: its table, search and
    measurement in the stage) in a scratch copy, its MLflow store beside it: the tests
    below read it, or go on from a copy of it."""
    tmp = tmp_path_factory.mktemp("reproduced")
    repo = copy_repo(tmp / "repo")
    params = tiny_params()
    params["search"]["budgets"]["web"] = "1000ms@onnxruntime"  # loose: mechanics, not timing
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run([f"{ENV_BIN}/dvc", "repro"], repo, env_with_venv(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}", STYLEGAN_MOBILE_RUN_GROUP="test-group"))
    return repo


def test_dvc_repro_runs_the_pipeline_and_a_second_repro_is_a_no_op(reproduced):
    repo, store = reproduced, reproduced.parent / "mlflow.db"
    env = env_with_venv(MLFLOW_TRACKING_URI=f"sqlite:///{store}", STYLEGAN_MOBILE_RUN_GROUP="test-group")
    metrics = json.loads((repo / "metrics/fetch_teacher.json").read_text())
    assert metrics["resolution"] == 32 and metrics["params"] > 0
    assert (repo / "artifacts/teacher/teacher.safetensors").exists()
    assert "fetch_teacher" in (repo / "dvc.lock").read_text()
    distilled = json.loads((repo / "metrics/distill.json").read_text())
    assert distilled["steps"] == 8 and distilled["stand_in_lpips"] == 1
    assert (repo / "artifacts/student/student.safetensors").exists()
    assert (repo / "plots/distill/validation.csv").exists()
    searched = json.loads((repo / "metrics/search.json").read_text())
    half = searched["budgets"]["half"]
    assert half["macs"] <= half["budget_macs"] and half["lpips_alex_randinit"] <= half["uniform_lpips_alex_randinit"]
    assert (repo / "artifacts/search/configs.json").exists()
    web = searched["budgets"]["web"]
    assert web["budget_ms"] == 1000 and web["within_budget"] == 1 and web["latency_ms_measured"] > 0
    assert set(searched["latency_model"]) == {"onnxruntime"}
    assert (repo / "artifacts/search/latency.csv").exists()
    evaluated = json.loads((repo / "metrics/evaluate.json").read_text())
    assert {"fid_randinit", "kid_randinit", "lpips_alex_randinit"} <= set(evaluated["student"])
    assert evaluated["models"]["full"]["latency"]["pytorch"]["batch_1"]["median_ms"] > 0
    assert (repo / "artifacts/evaluate/report.md").exists()
    exported = json.loads((repo / "metrics/export.json").read_text())
    assert {"full", "half", "web"} <= set(exported["models"])

    again = run([f"{ENV_BIN}/dvc", "repro"], repo, env)
    assert "didn't change, skipping" in again.stdout + again.stderr

    shown = json.loads(run([f"{ENV_BIN}/dvc", "metrics", "show", "--json"], repo, env).stdout)
    (workspace,) = shown.values()  # keyed by revision; the workspace's key is ""
    assert workspace["data"]["metrics/fetch_teacher.json"]["data"] == metrics
    assert workspace["data"]["metrics/distill.json"]["data"]["steps"] == 8

    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list")
    stages = sorted(r.data.tags["stage"] for r in runs if r.data.tags["role"] == "stage")
    assert stages == ["distill", "evaluate", "export", "fetch_teacher", "search"]  # no-op: no run
    (parent,) = [r for r in runs if r.data.tags["role"] == "pipeline"]
    for stage in runs:
        if stage.data.tags["role"] == "stage":
            assert stage.data.tags["mlflow.parentRunId"] == parent.info.run_id
            assert stage.data.tags["git_commit"] and stage.info.status == "FINISHED"
    assert parent.data.tags["run_group"] == "test-group"
    distill_run = next(r for r in runs if r.data.tags.get("stage") == "distill")
    assert "val/lpips_alex_randinit" in distill_run.data.metrics
    assert "lpips_alex_randinit_to_teacher_end" in distilled
    assert distill_run.data.tags["stand_in_weights"] == "true"
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(distill_run.info.run_id, "distill")}
    assert {"distill/student.safetensors", "distill/samples.png", "distill/plots"} <= logged


def test_changing_a_param_reruns_its_stage_and_everything_downstream(reproduced, tmp_path):
    """From a copy of the reproduced repo: a distill param reruns distill and what follows,
    not fetch_teacher; a search param reruns search, evaluate and export, not distill; a
    fetch_teacher param leaves its stage out of date (what follows it, as distill's shows)."""
    repo = shutil.copytree(reproduced, tmp_path / "repo", symlinks=True)
    env = env_with_venv(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    out = run([f"{ENV_BIN}/dvc", "exp", "run", "-S", "distill.steps=10"], repo, env)
    text = out.stdout + out.stderr
    assert "Running stage 'distill'" in text and "Running stage 'fetch_teacher'" not in text
    assert "Running stage 'search'" in text  # downstream of the student
    assert json.loads((repo / "metrics/distill.json").read_text())["steps"] == 10
    out = run([f"{ENV_BIN}/dvc", "exp", "run", "-S", "search.num_samples=5"], repo, env)
    text = out.stdout + out.stderr
    assert all(f"Running stage '{s}'" in text for s in ("search", "evaluate", "export"))
    assert "Running stage 'distill'" not in text
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["fetch_teacher"]["random"]["seed"] = 7
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = run([f"{ENV_BIN}/dvc", "status", "fetch_teacher"], repo, env).stdout
    assert "changed deps" in status and "params.yaml" in status  # its section, as DVC tracks it
    assert "modified:" in status and "fetch_teacher" in status.split("modified:")[1]


def test_airflow_dags_test_runs_the_nightly_dag_end_to_end(reproduced, tmp_path):
    """``airflow dags test`` of the nightly DAG on a copy of the reproduced repo with an
    evaluate param changed: every stage is a task, DVC skips the three up to date and
    runs evaluate and export, each logged to MLflow under the DAG run's pipeline run.
    (The pipeline from nothing is dvc repro's test above: the same commands.)"""
    repo = shutil.copytree(reproduced, tmp_path / "repo", symlinks=True)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["grid_samples"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    home = tmp_path / "airflow"
    env = env_with_venv(
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(repo / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        STYLEGAN_MOBILE_REPO=str(repo),
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    run([f"{ENV_BIN}/airflow", "db", "migrate"], repo, env)
    result = run([f"{ENV_BIN}/airflow", "dags", "test", "stylegan_mobile_nightly", "2026-11-22"],
                 repo, env)
    out = result.stdout + result.stderr
    assert all(stage in out for stage in ("fetch_teacher", "distill", "search", "evaluate", "export"))
    assert "Running stage 'evaluate'" in out and "Running stage 'distill'" not in out
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list")
    assert sorted(r.data.tags.get("stage") for r in runs if r.data.tags["role"] != "pipeline") == [
        "evaluate", "export"]
    stage = next(r for r in runs if r.data.tags.get("stage") == "evaluate")
    assert stage.data.tags["airflow_dag_id"] == "stylegan_mobile_nightly"
    parent = next(r for r in runs if r.data.tags["role"] == "pipeline")
    assert parent.data.tags["run_group"].startswith("airflow-")
    assert stage.data.tags["mlflow.parentRunId"] == parent.info.run_id
