"""MLflow helper shared by every stage: one run per stage, nested under one parent run
per pipeline run, with the tags reviewers need to compare runs.

Tracking store: ``MLFLOW_TRACKING_URI`` when set, else a SQLite store with its
artifacts in ``mlruns/`` at the repository root (git-ignored). Browse it with
``make mlflow-ui``. A SQLite store keeps its artifacts in ``artifacts/`` beside the
database file (an absolute location): MLflow's own default, ``./mlruns`` of whatever
directory the process started in, would scatter them.

Grouping: stages run as separate processes (``dvc repro``, Airflow tasks), so the
parent run is found by a group key: ``STYLEGAN_MOBILE_RUN_GROUP`` (set by
``make repro`` and by the DAG to the Airflow run id). Without it a stage run is a
top-level run of its own.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .params import flatten

EXPERIMENT = "stylegan-mobile"
RUN_GROUP_ENV = "STYLEGAN_MOBILE_RUN_GROUP"
_MAX_PARAM_LEN = 6000  # MLflow's limit for a param value
log = logging.getLogger(__name__)


def default_tracking_uri(root: str | Path = ".") -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{(Path(root) / 'mlruns' / 'mlflow.db').resolve()}"
    )


def setup(experiment: str = EXPERIMENT, root: str | Path = ".") -> str:
    """Point MLflow at the tracking store and make sure the experiment exists; returns its id."""
    import mlflow

    uri = default_tracking_uri(root)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    try:
        return client.create_experiment(experiment, artifact_location=location)
    except Exception:  # created concurrently by another stage
        return client.get_experiment_by_name(experiment).experiment_id


def provenance_tags(root: str | Path = ".") -> dict[str, str]:
    """git commit, dvc.lock digest and Airflow ids, whichever exist."""
    root = Path(root)
    tags: dict[str, str] = {}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode == 0:
            tags["git_commit"] = commit.stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                   cwd=root, capture_output=True, text=True, timeout=10)
            tags["git_dirty"] = str(bool(dirty.stdout.strip())).lower()
    except (OSError, subprocess.SubprocessError):
        pass
    lock = root / "dvc.lock"
    if lock.exists():
        tags["dvc_lock_sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()
    for env, tag in (("AIRFLOW_CTX_DAG_ID", "airflow_dag_id"),
                     ("AIRFLOW_CTX_DAG_RUN_ID", "airflow_run_id"),
                     ("AIRFLOW_CTX_TASK_ID", "airflow_task_id")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def params_digest(params: BaseModel | Mapping[str, Any]) -> str:
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def find_pipeline_run(client, experiment_id: str, group: str) -> str | None:
    """The id of the parent run of the pipeline run ``group``, if it exists."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.run_group = '{group}' and tags.role = 'pipeline'",
        max_results=1,
    )
    return found[0].info.run_id if found else None


def _parent_run_id(client, experiment_id: str, group: str, tags: dict[str, str]) -> str:
    """Find the pipeline's parent run for this group key, or create it."""
    if (run_id := find_pipeline_run(client, experiment_id, group)) is not None:
        return run_id
    run = client.create_run(
        experiment_id, run_name=f"pipeline {group}",
        tags={**tags, "role": "pipeline", "run_group": group},
    )
    return run.info.run_id


class StageRun:
    """The active MLflow run of a stage; thin wrappers that keep names consistent."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def log_params(self, params: BaseModel | Mapping[str, Any], prefix: str = "") -> None:
        import mlflow

        data = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params)
        flat = {f"{prefix}{k}": _param_value(v) for k, v in flatten(data).items()}
        items = list(flat.items())
        for i in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            mlflow.log_params(dict(items[i : i + 100]))

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        import mlflow

        flat = {k: float(v) for k, v in flatten(dict(metrics)).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        mlflow.log_metrics(flat, step=step)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        import mlflow

        path = Path(path)
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path)
        else:
            mlflow.log_artifact(str(path), artifact_path)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= _MAX_PARAM_LEN else text[: _MAX_PARAM_LEN - 3] + "..."


@contextlib.contextmanager
def stage_run(
    stage: str, params: BaseModel, tags: Mapping[str, Any] | None = None, root: str | Path = "."
) -> Iterator[StageRun]:
    """Run a stage inside an MLflow run (nested under the pipeline's parent run when grouped).

    The stage's params are logged flat, provenance tags set; on an exception the run
    is marked FAILED with the error message as a tag, and the exception propagates.
    """
    import mlflow

    experiment_id = setup(root=root)
    client = mlflow.MlflowClient()
    base_tags = {**provenance_tags(root), "params_sha256": params_digest(params),
                 **{k: str(v) for k, v in (tags or {}).items()}}
    group = os.environ.get(RUN_GROUP_ENV)
    parent = _parent_run_id(client, experiment_id, group, base_tags) if group else None
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, parent_run_id=parent,
                          tags={**base_tags, "stage": stage, "role": "stage"}) as run:
        handle = StageRun(run.info.run_id)
        handle.log_params(params)
        try:
            yield handle
        except BaseException as e:
            status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
            mlflow.set_tag("error", f"{type(e).__name__}: {e}"[:5000])
            mlflow.end_run(status)
            if parent:
                client.set_tag(parent, f"failed_stage.{stage}", str(e)[:500])
                client.set_terminated(parent, status)
            raise
    if parent:
        client.set_terminated(parent, "FINISHED")
