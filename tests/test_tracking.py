"""Where the tracking helper puts runs and artifacts, whatever the working directory."""

from __future__ import annotations

from pathlib import Path

import mlflow
from pydantic import BaseModel

from pipeline import tracking


class _Params(BaseModel):
    steps: int = 3


def test_a_sqlite_store_keeps_its_artifacts_beside_the_database(tmp_path, monkeypatch):
    """MLflow's default artifact root is ``./mlruns`` of the working directory; a stage
    started from anywhere must write its artifacts next to the store, nowhere else."""
    store, elsewhere = tmp_path / "store", tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    (tmp_path / "report.txt").write_text("figures")
    with tracking.stage_run("evaluate", _Params()) as run:
        run.log_artifact(tmp_path / "report.txt")
    uri = mlflow.get_run(run.run_id).info.artifact_uri
    assert uri.startswith((store / "artifacts").as_uri()), uri
    assert list(store.glob("artifacts/*/artifacts/report.txt"))
    assert not any(elsewhere.iterdir())


def test_the_default_store_lives_in_mlruns_of_the_given_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    try:
        tracking.setup(root=tmp_path / "repo")
        exp = mlflow.MlflowClient().get_experiment_by_name(tracking.EXPERIMENT)
        assert Path(mlflow.get_tracking_uri().removeprefix("sqlite:///")) == (
            tmp_path / "repo" / "mlruns" / "mlflow.db")
        assert exp.artifact_location == (tmp_path / "repo" / "mlruns" / "artifacts").as_uri()
    finally:
        mlflow.set_tracking_uri(None)
