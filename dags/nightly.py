"""Nightly pipeline DAG: one task per DVC stage, derived from dvc.yaml.

dvc.yaml is the single source of truth for the stage commands; each task runs
``dvc repro --single-item <stage>`` in the repository, so nightly runs get DVC's
caching (an unchanged stage is skipped) and nothing is written twice. Task order
comes from the stages' data dependencies (a dep inside another stage's outs).

Only light imports at module level: Airflow parses this file often.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

DAG_ID = "stylegan_mobile_nightly"
# The repository this DAG drives: the folder above dags/ unless deployed elsewhere.
REPO = Path(os.environ.get("STYLEGAN_MOBILE_REPO", Path(__file__).resolve().parents[1]))
# The project environment's bin/ (where dvc and python live): the one running Airflow.
ENV_BIN = os.environ.get("STYLEGAN_MOBILE_BIN", str(Path(sys.executable).parent))
STAGE_TIMEOUT = timedelta(hours=12)


def stage_graph(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stages in file order, each with the stages whose outputs it depends on."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})

    def paths(stage: dict, key: str) -> list[str]:
        items = stage.get(key, [])
        return [next(iter(i)) if isinstance(i, dict) else str(i) for i in items]

    outs = {name: paths(s, "outs") for name, s in stages.items()}
    graph: dict[str, list[str]] = {}
    for name, stage in stages.items():
        deps = paths(stage, "deps")
        graph[name] = [
            up for up, up_outs in outs.items() if up != name
            and any(d == o or d.startswith(o.rstrip("/") + "/") for d in deps for o in up_outs)
        ]
    return graph


def _on_failure(context) -> None:
    """Record a failed task in MLflow, on the pipeline's parent run when one exists."""
    try:
        import mlflow

        from pipeline import tracking

        experiment_id = tracking.setup(root=REPO)
        client = mlflow.MlflowClient()
        parent = tracking.find_pipeline_run(client, experiment_id, f"airflow-{context['run_id']}")
        ti = context["task_instance"]
        message = f"{ti.task_id} failed (try {ti.try_number}): {context.get('exception')}"[:500]
        if parent:
            client.set_tag(parent, f"airflow_failure.{ti.task_id}", message)
            client.set_terminated(parent, "FAILED")
    except Exception as e:  # never mask the task's own failure
        print(f"could not record the failure in MLflow: {e}", file=sys.stderr)


with DAG(
    dag_id=DAG_ID,
    description="fetch_teacher -> distill -> search -> evaluate -> export, via dvc repro",
    schedule="0 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # stages share one workspace
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": STAGE_TIMEOUT,
        "on_failure_callback": _on_failure,
    },
    tags=["stylegan-mobile", "dvc"],
) as dag:
    env = {
        "PATH": f"{ENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        # Groups the stage runs under one MLflow parent run per DAG run.
        "STYLEGAN_MOBILE_RUN_GROUP": "airflow-{{ run_id }}",
        "DVC_NO_ANALYTICS": "1",
    }
    graph = stage_graph(REPO / "dvc.yaml")
    tasks = {
        name: BashOperator(
            task_id=name,
            bash_command=f"dvc repro --single-item {name}",
            cwd=str(REPO),
            env=env,
            append_env=True,
        )
        for name in graph
    }
    for name, upstream in graph.items():
        for up in upstream:
            tasks[up] >> tasks[name]
