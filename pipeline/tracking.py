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

Outages: a stage checks the tracking server before any work and stops with one line
when it does not answer (or, with ``STYLEGAN_MOBILE_TRACKING=off``, runs untracked). A
stage never waits on the tracker: one background thread sends what it logs; whatever
cannot be sent (the server died, or tracking is off) is appended to a spool file
(``.tracking-spool/`` or ``$STYLEGAN_MOBILE_TRACKING_SPOOL``), sent at the stage's end
if the server is back, else left for ``python -m pipeline.tracking replay``, which
logs it tagged ``logged_late=true``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from .errors import PipelineError, os_reason
from .headline import VIEW_KEY, VIEW_TAG, Comparison, describe, view_figures, view_state
from .params import flatten
from .redaction import redact_uri, scrub_secrets
from .scratch import alive, owner

EXPERIMENT = "stylegan-mobile"
RUN_GROUP_ENV = "STYLEGAN_MOBILE_RUN_GROUP"
EXPERIMENT_KIND = "mlflow.experimentKind"
REGRESSED_TAG = "regressed"  # the pipeline run's verdict on the previous run (and regressed.<figure>)
TRACKING_ENV = "STYLEGAN_MOBILE_TRACKING"  # "off": run untracked, spool for a later replay
SPOOL_ENV = "STYLEGAN_MOBILE_TRACKING_SPOOL"
_MAX_PARAM_LEN = 6000  # MLflow's limit for a param value
# MLflow retries a dead server for minutes by default; a stage's background sender gives
# up sooner and spools (the user's own settings win).
_HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
log = logging.getLogger(__name__)


class TrackingUnavailable(PipelineError):
    """The tracking server does not answer."""


def default_tracking_uri(root: str | Path = ".") -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or (
        f"sqlite:///{(Path(root) / 'mlruns' / 'mlflow.db').resolve()}"
    )


def spool_dir(root: str | Path = ".") -> Path:
    return Path(os.environ.get(SPOOL_ENV) or Path(root) / ".tracking-spool")


def tracking_off() -> bool:
    return os.environ.get(TRACKING_ENV, "").strip().lower() in ("off", "0", "false", "no")


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """A tracking server must answer before a stage starts work (any HTTP answer will do:
    authentication is MLflow's business); local stores need no check."""
    if not uri.startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout_s)
    except requests.RequestException as e:
        reason = scrub_secrets(os_reason(e) or type(e).__name__)
        raise TrackingUnavailable(
            f"MLflow tracking server {redact_uri(uri)} is not reachable ({reason}); start it or "
            f"correct MLFLOW_TRACKING_URI, or run untracked with {TRACKING_ENV}=off (logged "
            f"later by `python -m pipeline.tracking replay`); nothing was run") from None


def setup(experiment: str = EXPERIMENT, root: str | Path = ".") -> str:
    """Point MLflow at the tracking store (checked to answer) and make sure the experiment
    exists; returns its id."""
    import mlflow

    for name, value in _HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    uri = default_tracking_uri(root)
    check_reachable(uri)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        if exp.tags.get(EXPERIMENT_KIND) != "custom_model_development":
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, "custom_model_development")
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
    try:
        # a model-training experiment: the UI opens on its runs, not on GenAI traces
        return client.create_experiment(experiment, artifact_location=location,
                                        tags={EXPERIMENT_KIND: "custom_model_development"})
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


def pipeline_run(client, experiment_id: str, group: str, tags: Mapping[str, str]) -> str:
    """The id of the parent run of the pipeline run ``group``, created when missing. It
    stands for the whole run (a DAG run), so no task's id is among its tags."""
    if (run_id := find_pipeline_run(client, experiment_id, group)) is not None:
        return run_id
    tags = {k: v for k, v in tags.items() if k != "airflow_task_id"}
    run = client.create_run(
        experiment_id, run_name=f"pipeline {group}",
        tags=_with_context({**tags, "role": "pipeline", "run_group": group}),
    )
    return run.info.run_id


class StageRun:
    """The MLflow run of a stage. Calls return at once: one background thread sends them
    (through ``MlflowClient``, with the run's id). When a call fails, the server is taken
    for gone: that call and every later one go to the spool file, and :meth:`close` sends
    the spool if the server is back by then. ``run_id`` None: tracking is off, all spools."""

    def __init__(self, run_id: str | None, spool: Path, header: dict[str, Any],
                 parent_id: str | None = None) -> None:
        self.run_id = run_id
        self.parent_id = parent_id  # the pipeline's parent run, when grouped
        self.spool = spool
        self._header = {**header, "run_id": run_id}
        self._down = run_id is None
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._sender = threading.Thread(target=self._send_all, name="mlflow-sender", daemon=True)
        self._sender.start()

    def log_params(self, params: BaseModel | Mapping[str, Any], prefix: str = "") -> None:
        self._queue.put({"kind": "params", "values": _flat_params(params, prefix)})

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        flat = {k: float(v) for k, v in flatten(dict(metrics)).items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self._queue.put({"kind": "metrics", "values": flat, "step": step or 0,
                         "time_ms": int(time.time() * 1000)})

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._queue.put({"kind": "tags", "values": {k: str(v) for k, v in tags.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._queue.put({"kind": "artifact", "path": str(Path(path).resolve()),
                         "folder": artifact_path})

    def update_pipeline_run(self, metrics: Mapping[str, float], params: BaseModel,
                            tags: Mapping[str, str], files: list[Path],
                            verdict: Comparison | None = None) -> None:
        """Put headline figures, the effective params, tags, summary files (under
        ``summary/``) and the stage's verdict on the previous run on the pipeline's parent
        run, then rewrite its description (MLflow's note) from everything it holds and the
        experiment's headline view; nothing when the stage is not grouped."""
        if self.parent_id is None and not self._header.get("group"):
            return
        judged = verdict is not None and verdict.previous is not None
        records = [{"kind": "metrics", "values": dict(metrics), "step": 0,
                    "time_ms": int(time.time() * 1000)},
                   {"kind": "params", "values": _flat_params(params)},
                   {"kind": "tags", "values": dict(tags)},
                   *({"kind": "artifact", "path": str(Path(f).resolve()), "folder": "summary"}
                     for f in files),
                   *([{"kind": "verdict", "compared_with": verdict.previous,
                       "judged": verdict.judged, "regressed": verdict.regressed}] if judged else []),
                   {"kind": "note"}]
        for record in records:
            self._queue.put({**record, "parent_run": self.parent_id})

    def previous_pipeline_run(self, profile: str) -> tuple[str, dict[str, float]] | None:
        """Name and headline figures of the latest finished pipeline run of ``profile``
        other than this one, or None: there is none, tracking is off or the server is down
        (a comparison is never worth failing a stage for)."""
        if self.run_id is None or self._down or "'" in profile:
            return None
        import mlflow

        query = (f"tags.role = 'pipeline' and tags.profile = '{profile}' and "
                 "attributes.status = 'FINISHED'")
        if group := self._header.get("group"):
            query += f" and tags.run_group != '{group}'"
        try:
            client = mlflow.MlflowClient()
            experiment = client.get_run(self.run_id).info.experiment_id
            runs = client.search_runs([experiment], query, max_results=1,
                                      order_by=["attributes.start_time DESC"])
        except Exception as e:
            log.warning("tracking: could not look up the previous pipeline run: %s",
                        scrub_secrets(str(e))[:300])
            return None
        return (runs[0].info.run_name, dict(runs[0].data.metrics)) if runs else None

    def _send_all(self) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient()
        while (record := self._queue.get()) is not None:
            if not self._down:
                try:
                    send(client, self.run_id, record)
                    continue
                except MlflowException as e:
                    if 400 <= e.get_http_status_code() < 500:  # the record is refused, the server is fine
                        log.warning("tracking: MLflow refused a %s record: %s", record["kind"],
                                    scrub_secrets(str(e))[:300])
                        continue
                    self._down = True
                except Exception:  # the server went away: never the stage's problem
                    self._down = True
                log.warning("tracking: the server stopped answering; the stage goes on, what is "
                            "left to log is kept in %s", self.spool)
            self._append(record)

    def _append(self, record: dict[str, Any]) -> None:
        fresh = not self.spool.exists()
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool, "a") as f:
            if fresh:
                f.write(json.dumps({"kind": "run", **self._header}) + "\n")
            f.write(json.dumps(record) + "\n")

    def close(self, status: str, parent: dict[str, Any] | None = None) -> None:
        """Send what is queued, end the run (and the pipeline's parent run) with ``status``;
        spooled records are sent now if the server answers again."""
        self._queue.put({"kind": "end", "status": status, "parent": parent})
        self._queue.put(None)
        self._sender.join()
        if self.spool.exists() and self.run_id is not None:
            with contextlib.suppress(Exception):
                replay_file(self.spool)
        if self.spool.exists():
            log.warning("tracking: this %s run is not (fully) in MLflow; its record is in %s: "
                        "`python -m pipeline.tracking replay` logs it once the server answers",
                        self._header.get("stage"), self.spool)


def send(client, run_id: str, record: dict[str, Any]) -> None:
    """Log one queued or spooled record to the run ``run_id`` (or to the pipeline's parent
    run, for the records that name it)."""
    from mlflow.entities import Metric, Param, RunTag

    if "parent_run" in record:
        if (run_id := record["parent_run"]) is None:
            return  # untracked and ungrouped: nothing to update
    kind = record["kind"]
    if kind == "params":
        values = record["values"]
        if "parent_run" in record:  # every stage sends them: the first one's are enough
            logged = client.get_run(run_id).data.params
            values = {k: v for k, v in values.items() if k not in logged}
        params = [Param(k, v) for k, v in values.items()]
        for i in range(0, len(params), 100):  # MLflow caps a batch at 100 params
            client.log_batch(run_id, params=params[i : i + 100])
    elif kind == "metrics":
        metrics = [Metric(k, v, record["time_ms"], record["step"]) for k, v in record["values"].items()]
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in record["values"].items()])
    elif kind == "artifact":
        path = Path(record["path"])
        if path.is_dir():
            client.log_artifacts(run_id, str(path), record["folder"])
        elif path.is_file():
            client.log_artifact(run_id, str(path), record["folder"])
        else:
            log.warning("tracking: %s is gone; not logged", path)
    elif kind == "verdict":
        record_verdict(client, run_id, record)
    elif kind == "note":
        run = client.get_run(run_id)
        client.set_tag(run_id, "mlflow.note.content", describe(run.data.metrics, run.data.tags))
        update_headline_view(client, run.info.experiment_id, run.data.metrics)
    elif kind == "end":
        client.set_terminated(run_id, record["status"])
        if parent := record.get("parent"):
            for key, value in parent.get("tags", {}).items():
                client.set_tag(parent["run_id"], key, value)
            client.set_terminated(parent["run_id"], parent["status"])


def record_verdict(client, run_id: str, verdict: Mapping[str, Any]) -> None:
    """A stage's verdict on the previous run, put on the pipeline run: one tag
    ``regressed.<figure>`` per figure worse beyond its tolerance (removed again when the
    stage, re-run, finds it fine), then the run's verdict over every stage's figures:
    ``regressed`` (tag true/false and metric 1/0), ``regressed_figures``, ``compared_with``."""
    from mlflow.entities import Metric, RunTag

    tags = client.get_run(run_id).data.tags
    for figure in verdict["judged"]:
        key = f"{REGRESSED_TAG}.{figure}"
        if figure in verdict["regressed"]:
            client.set_tag(run_id, key, verdict["regressed"][figure])
        elif key in tags:
            client.delete_tag(run_id, key)
    tags = client.get_run(run_id).data.tags
    worse = {k.removeprefix(f"{REGRESSED_TAG}."): v for k, v in sorted(tags.items())
             if k.startswith(f"{REGRESSED_TAG}.")}
    client.log_batch(run_id, metrics=[Metric(REGRESSED_TAG, float(bool(worse)), int(time.time() * 1000), 0)],
                     tags=[RunTag(REGRESSED_TAG, str(bool(worse)).lower()),
                           RunTag("regressed_figures", "; ".join(f"{k} {v}" for k, v in worse.items())[:4000]),
                           RunTag("compared_with", verdict["compared_with"])])


def update_headline_view(client, experiment_id: str, metrics: Mapping[str, float]) -> None:
    """The experiment's shared runs view (columns: the profile and the headline figures of
    the latest pipeline run to report), opened by :func:`headline_view_url`."""
    client.set_experiment_tag(experiment_id, VIEW_TAG, view_state(view_figures(metrics)))


def headline_view_url(ui: str, experiment_id: str) -> str:
    """The MLflow UI's address of the experiment's training runs in the headline view."""
    return (f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs"
            f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")


def _with_context(tags: dict[str, str]) -> dict[str, str]:
    """``tags`` plus what MLflow's fluent API would add (user, source), shown by the UI."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags(tags)


def _flat_params(params: BaseModel | Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else dict(params)
    return {f"{prefix}{k}": _param_value(v) for k, v in flatten(data).items()}


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= _MAX_PARAM_LEN else text[: _MAX_PARAM_LEN - 3] + "..."


@contextlib.contextmanager
def stage_run(
    stage: str, params: BaseModel, tags: Mapping[str, Any] | None = None, root: str | Path = "."
) -> Iterator[StageRun]:
    """Run a stage inside an MLflow run (nested under the pipeline's parent run when grouped).

    The stage's params are logged flat, provenance tags set; on an exception the run
    is marked FAILED (KILLED on an interrupt) with the error message as a tag, and the
    exception propagates. With tracking off the run goes to the spool only.
    """
    base_tags = {**provenance_tags(root), "params_sha256": params_digest(params),
                 **{k: str(v) for k, v in (tags or {}).items()}}
    group = os.environ.get(RUN_GROUP_ENV)
    spool = spool_dir(root) / f"{stage}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.jsonl"
    header = {"stage": stage, "group": group,
              "tags": {**base_tags, "stage": stage, "role": "stage", "process": owner()},
              "start_ms": int(time.time() * 1000)}
    parent = None
    if tracking_off():
        log.warning("tracking is OFF (%s=off): this %s run is not in MLflow; it is spooled to "
                    "%s for `python -m pipeline.tracking replay`", TRACKING_ENV, stage, spool)
        run = StageRun(None, spool, {**header, "reason": f"{TRACKING_ENV}=off"})
    else:
        import mlflow

        experiment_id = setup(root=root)
        client = mlflow.MlflowClient()
        close_abandoned_runs(client, experiment_id, stage)
        parent = pipeline_run(client, experiment_id, group, base_tags) if group else None
        nested = {"mlflow.parentRunId": parent} if parent else {}
        started = client.create_run(experiment_id, run_name=stage,
                                    tags=_with_context({**header["tags"], **nested}))
        run = StageRun(started.info.run_id, spool,
                       {**header, "reason": "the tracking server stopped answering"}, parent)
    run.log_params(params)
    try:
        yield run
    except BaseException as e:
        status = "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        run.set_tags({"error": scrub_secrets(f"{type(e).__name__}: {e}")[:5000]})
        _finish(run, status, parent, {f"failed_stage.{stage}": scrub_secrets(str(e))[:500]})
        raise
    _finish(run, "FINISHED", parent, {})


def _finish(run: StageRun, status: str, parent: str | None, parent_tags: dict[str, str]) -> None:
    grouped = parent is not None or (run.run_id is None and os.environ.get(RUN_GROUP_ENV))
    run.close(status, {"run_id": parent, "status": status, "tags": parent_tags} if grouped else None)


def close_abandoned_runs(client, experiment_id: str, stage: str) -> None:
    """Runs of ``stage`` still RUNNING whose process (on this host) is gone were killed
    (kill -9, a lost machine): mark them KILLED so that they do not look in progress."""
    host = owner().rsplit("-", 1)[0]
    for run in client.search_runs([experiment_id], max_results=100, filter_string=(
            f"tags.stage = '{stage}' and attributes.status = 'RUNNING' and "
            f"tags.process LIKE '{host}-%'")):
        pid = run.data.tags["process"].rsplit("-", 1)[1]
        if pid.isdigit() and not alive(int(pid)):
            client.set_tag(run.info.run_id, "error", "abandoned: its process was killed; "
                           "closed by the next run of the stage")
            client.set_terminated(run.info.run_id, "KILLED")
            log.info("tracking: closed the abandoned %s run %s (its process is gone)", stage,
                     run.info.run_id)


def replay_file(path: Path, root: str | Path = ".", store: tuple[Any, str] | None = None) -> str:
    """Log one spool file: into its run when it has one (the server died during it), else
    into a new run (nested under its pipeline's parent run); returns the run id.
    ``store``: (client, experiment id) when the caller has set them up already."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    header, records = lines[0], lines[1:]
    client, experiment_id = store or _store(root)
    run_id = header.get("run_id")
    if run_id is None:
        tags = dict(header["tags"])
        if group := header.get("group"):
            tags["mlflow.parentRunId"] = pipeline_run(client, experiment_id, group,
                                                         header["tags"])
        run_id = client.create_run(experiment_id, start_time=header["start_ms"], tags=tags,
                                   run_name=header["stage"]).info.run_id
    send(client, run_id, {"kind": "tags", "values": {"logged_late": "true",
                                                     "logged_late_reason": header["reason"]}})
    parent = find_pipeline_run(client, experiment_id, header["group"]) if header.get("group") else None
    for record in records:
        if record["kind"] == "end" and record.get("parent") and record["parent"]["run_id"] is None:
            record["parent"]["run_id"] = parent
        if "parent_run" in record and record["parent_run"] is None:
            record["parent_run"] = parent
        send(client, run_id, record)
    path.unlink()
    return run_id


def replay(folder: Path, root: str | Path = ".") -> list[str]:
    """Log every spool file in ``folder``, oldest first; returns the run ids."""
    files = sorted(folder.glob("*.jsonl"), key=os.path.getmtime)
    store = _store(root) if files else None  # one health check and experiment lookup
    return [replay_file(path, root, store) for path in files]


def _store(root: str | Path) -> tuple[Any, str]:
    """A client of the configured tracking store and the experiment's id (checked reachable)."""
    import mlflow

    experiment_id = setup(root=root)
    return mlflow.MlflowClient(), experiment_id


def main(argv: list[str] | None = None) -> int:
    """``python -m pipeline.tracking replay``: log the runs spooled while the tracking server
    was unreachable or tracking was off; ``url``: where the MLflow UI shows the pipeline runs
    with their headline figures as columns."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking", description=main.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    replay_cmd = sub.add_parser("replay", help="log spooled runs")
    replay_cmd.add_argument("--spool", type=Path, default=None,
                            help=f"spool folder (default: ${SPOOL_ENV} or .tracking-spool)")
    url_cmd = sub.add_parser("url", help="print the MLflow UI's address of the headline view")
    url_cmd.add_argument("--ui", default="http://127.0.0.1:5000", help="the UI's base address")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "url":
        try:
            print(headline_view_url(args.ui, setup()))
        except PipelineError as e:
            print(scrub_secrets(f"url: error: {e}"), file=sys.stderr)
            return 2
        return 0
    folder = args.spool or spool_dir()
    try:
        runs = replay(folder)
    except PipelineError as e:
        print(scrub_secrets(f"replay: error: {e}"), file=sys.stderr)
        return 2
    print(f"logged {len(runs)} spooled run(s) from {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
