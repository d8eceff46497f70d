"""The nightly DAG: tasks derived from dvc.yaml, retries with backoff, light to parse."""

from __future__ import annotations

import importlib.util

import pytest
import yaml

from tests.conftest import REPO


@pytest.fixture(scope="module")
def nightly(tmp_path_factory):
    import os

    os.environ.setdefault("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow")))
    spec = importlib.util.spec_from_file_location("nightly_dag", REPO / "dags" / "nightly.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tasks_are_the_dvc_stages_with_retries_backoff_and_no_catchup(nightly):
    stages = list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])
    dag = nightly.dag
    assert dag.task_ids == stages
    assert dag.catchup is False and dag.schedule is not None
    for task in dag.tasks:
        assert task.retries >= 1 and task.retry_exponential_backoff
        assert task.execution_timeout is not None
        assert task.bash_command == f"dvc repro --single-item {task.task_id}"
        assert task.cwd == str(REPO)


def test_task_order_follows_the_data_dependencies_in_dvc_yaml(nightly, tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "x", "deps": ["code/a.py"], "outs": ["artifacts/a"]},
        "b": {"cmd": "x", "deps": ["artifacts/a/model.bin", "code/b.py"],
              "outs": [{"artifacts/b": {"cache": True}}]},
        "c": {"cmd": "x", "deps": ["artifacts/a", "artifacts/b"], "outs": ["c.json"]},
        "d": {"cmd": "x", "deps": ["artifacts/ab"]},  # a prefix, not a sub-path
    }}))
    assert nightly.stage_graph(tmp_path / "dvc.yaml") == {
        "a": [], "b": ["a"], "c": ["a", "b"], "d": []}


def test_the_dag_file_imports_nothing_heavy_at_module_level():
    """Airflow re-parses DAG files often: torch, mlflow and the pipeline load only in tasks."""
    import subprocess
    import sys

    probe = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('torch', 'mlflow', 'pipeline', 'dvc') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(REPO / "dags" / "nightly.py")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
