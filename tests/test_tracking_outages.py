"""The tracking server is down before a stage, dies during one, or tracking is switched off:
the stage fails fast in one line, or goes on and spools what it could not log; nothing of
the training is lost, no credential is printed, and the spool replays into MLflow."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import mlflow
import pytest
import yaml

from components.fetch_teacher import main as fetch_main
from pipeline import tracking
from pipeline.checkpoints import save_teacher
from tests.conftest import REPO, MlflowServer, env_with_venv, tiny_distill, tiny_params


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(tracking.SPOOL_ENV, str(tmp_path / "spool"))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    return tmp_path


def test_an_unreachable_server_fails_fast_in_one_line_without_its_credentials(
        workdir, monkeypatch, capsys, closed_port):
    uri = f"http://reviewer:s3cr3t-pw@127.0.0.1:{closed_port}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    started = time.monotonic()
    assert fetch_main(["--params", "params.yaml", "--out", "teacher", "--no-progress"]) == 2
    assert time.monotonic() - started < 30  # MLflow alone retries for minutes
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"fetch_teacher: error: MLflow tracking server http://127.0.0.1:"
                   f"{uri.rsplit(':', 1)[1]} is not reachable (Connection refused); start it or "
                   f"correct MLFLOW_TRACKING_URI, or run untracked with STYLEGAN_MOBILE_TRACKING=off "
                   f"(logged later by `python -m pipeline.tracking replay`); nothing was run"]
    assert not (workdir / "teacher").exists()


def test_a_crash_traceback_carries_no_credential(workdir, monkeypatch, capsys, mlflow_uri):
    from pipeline.stages import fetch_teacher

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-secret")

    def crash(*args, **kwargs):
        raise RuntimeError("boom at http://bob:hunter2@store.local/x with wJalrXUtnFEMI-secret")

    monkeypatch.setattr(fetch_teacher, "run", crash)
    assert fetch_main(["--params", "params.yaml", "--out", "teacher", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom at http://***@store.local/x with ***" in err
    assert "hunter2" not in err and "wJalrXUtnFEMI" not in err
    run = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list")[0]
    assert run.info.status == "FAILED" and "hunter2" not in run.data.tags["error"]


def test_untracked_runs_are_spooled_and_replayed_later(workdir, monkeypatch, caplog, tmp_path,
                                                       closed_port):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port}")
    monkeypatch.setenv(tracking.TRACKING_ENV, "off")
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "nightly-1")
    assert fetch_main(["--params", "params.yaml", "--out", "teacher", "--no-progress"]) == 0
    assert "tracking is OFF" in caplog.text
    (spooled,) = (tmp_path / "spool").glob("fetch_teacher-*.jsonl")
    assert (workdir / "teacher" / "teacher.safetensors").exists()

    # The server is back (here: a local store): replay logs the run, tagged as late.
    monkeypatch.delenv(tracking.TRACKING_ENV)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert tracking.main(["replay"]) == 0
    assert not spooled.exists()
    runs = {r.data.tags["role"]: r for r in mlflow.search_runs(
        experiment_names=[tracking.EXPERIMENT], output_format="list")}
    stage = runs["stage"]
    assert stage.info.status == "FINISHED" and stage.data.tags["logged_late"] == "true"
    assert stage.data.tags["mlflow.parentRunId"] == runs["pipeline"].info.run_id
    assert stage.data.params["source"] == "random:" and stage.data.metrics["params"] > 0
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(stage.info.run_id, "fetch_teacher")}
    assert "fetch_teacher/fetch_teacher.json" in artifacts
    assert runs["pipeline"].info.status == "FINISHED"


@pytest.mark.slow
def test_a_server_that_dies_during_training_loses_nothing(tmp_path, tiny_teacher):
    """The server is killed while distill trains: training goes on to its end (exit 0, the
    student written), what could not be logged is spooled, and replays into the same run
    once the server is back."""
    server = MlflowServer(tmp_path / "server")
    (tmp_path / "server").mkdir()
    uri = server.start()
    params = tiny_params()
    params["distill"] = tiny_distill(steps=30, log_every=1, checkpoint_every=30,
                                     validation={"every": 30})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    save_teacher(tiny_teacher, tmp_path / "teacher.safetensors")
    env = env_with_venv(MLFLOW_TRACKING_URI=uri, PYTHONPATH=str(REPO),
                        **{tracking.SPOOL_ENV: str(tmp_path / "spool")})
    proc = subprocess.Popen(
        [sys.executable, "-m", "components.distill", "--no-progress", "--params", "params.yaml",
         "--teacher", "teacher.safetensors", "--out", "student", "--snapshots", "snap",
         "--plots", "plots", "--metrics", "distill.json"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the first steps are logged: the server is in use
            if "/30 step" in line:
                break
        server.stop()
        rest = proc.stderr.read()
        assert proc.wait(timeout=600) == 0, rest[-3000:]
    finally:
        proc.kill()
    assert "the stage goes on" in rest and "python -m pipeline.tracking replay" in rest
    assert json.loads((tmp_path / "distill.json").read_text())["steps"] == 30
    assert (tmp_path / "student" / "student.safetensors").exists()
    (spooled,) = (tmp_path / "spool").glob("distill-*.jsonl")
    run_id = json.loads(spooled.read_text().splitlines()[0])["run_id"]

    server.start()
    try:
        result = subprocess.run([sys.executable, "-m", "pipeline.tracking", "replay"], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        mlflow.set_tracking_uri(uri)
        client = mlflow.MlflowClient()
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.tags["logged_late"] == "true"
        history = client.get_metric_history(run_id, "train/total_g")
        assert sorted(m.step for m in history) == list(range(1, 31))  # every step, once
        assert run.data.metrics["steps"] == 30
    finally:
        mlflow.set_tracking_uri(None)
        server.stop()
