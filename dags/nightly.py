"""Nightly pipeline DAG: one task per DVC stage, derived from dvc.yaml.

dvc.yaml is the single source of truth for the stage commands; each task runs
``dvc repro --single-item <stage>`` in the repository, so nightly runs get DVC's
caching (an unchanged stage is skipped) and nothing is written twice. Task order
comes from the stages' data dependencies (a dep inside another stage's outs).

A manual run can pick a profile and override keys (DAG params ``profile`` and
``overrides``, the grammar of ``dvc exp run -S``): the setup task ``params`` writes
them into params.yaml (``dags/run_params.py``), the teardown task ``restore_params``
leaves the workspace as the run found it, also when a stage failed. Where each run's
results live: a plain run's (the nightly) in the workspace (dvc.lock, metrics/, cached
outputs), MLflow and the artifact store; a run with a profile or overrides in its DVC
experiment ``airflow-<run id>`` (its MLflow pipeline run is tagged ``dvc_experiment``),
MLflow and the artifact store, never in the workspace (see run_params.py).

Where the tasks run (``STYLEGAN_MOBILE_RUNNER``):

- ``local`` (default): in the repository, with the project environment's ``dvc``.
- ``kubernetes``: every task is a pod of the project image (KubernetesPodOperator) on a
  shared workspace volume (``infra/k8s/pod-templates/``); the GPU stages get GPUs, and
  distill runs as one multi-GPU ``torchrun`` job whose command is dvc.yaml's with
  ``python -m`` replaced by ``torchrun --nproc_per_node N -m`` (``dvc commit`` records it).

Only light imports at module level: Airflow parses this file often, and every task
process parses it again before it runs. The Bash operator is imported at the top;
Airflow's DAG processor imports the airflow modules it finds in the file once, before
it forks the parsing processes (``parsing_pre_import_modules``). The Kubernetes operator
and client load only in the cluster variant, torch, mlflow, dvc and the pipeline only
inside tasks.
"""

from __future__ import annotations

import os
import shlex
import sys
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG, Param

DAG_ID = "stylegan_mobile_nightly"
# The repository this DAG drives: the folder above dags/ unless deployed elsewhere.
REPO = Path(os.environ.get("STYLEGAN_MOBILE_REPO", Path(__file__).resolve().parents[1]))
# The project environment's bin/ (where dvc and python live): the one running Airflow.
ENV_BIN = os.environ.get("STYLEGAN_MOBILE_BIN", str(Path(sys.executable).parent))
RUNNER = os.environ.get("STYLEGAN_MOBILE_RUNNER", "local")
BAD_INPUT = 2  # the stage CLIs' exit status for bad input: retrying cannot help

# Per-stage limits (a real FFHQ distillation takes days); other stages get the default.
STAGE_TIMEOUTS = {
    "fetch_teacher": timedelta(hours=2),
    "distill": timedelta(days=4),
    "search": timedelta(hours=12),
    "evaluate": timedelta(hours=12),
    "export": timedelta(hours=4),
}
DEFAULT_TIMEOUT = timedelta(hours=12)

# Cluster variant (STYLEGAN_MOBILE_RUNNER=kubernetes); see infra/k8s/README.md.
K8S = {
    "image": os.environ.get("STYLEGAN_MOBILE_IMAGE", "stylegan-mobile:0.1.0-cuda"),
    "namespace": os.environ.get("STYLEGAN_MOBILE_NAMESPACE", "stylegan-mobile"),
    "gpu_stages": os.environ.get("STYLEGAN_MOBILE_GPU_STAGES", "distill,search,evaluate").split(","),
    "distill_gpus": int(os.environ.get("STYLEGAN_MOBILE_DISTILL_GPUS", "4")),
    "templates": REPO / "infra" / "k8s" / "pod-templates",
}


def stage_graph(dvc_yaml: Path) -> dict[str, list[str]]:
    """Stages in file order, each with the stages whose outputs (outs, metrics, plots) it depends on."""
    stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {})

    def paths(stage: dict, key: str) -> list[str]:
        items = stage.get(key, [])
        return [next(iter(i)) if isinstance(i, dict) else str(i) for i in items]

    # metrics and plots are outputs too (export reads metrics/evaluate.json)
    outs = {name: [p for key in ("outs", "metrics", "plots") for p in paths(s, key)] for name, s in stages.items()}
    graph: dict[str, list[str]] = {}
    for name, stage in stages.items():
        deps = paths(stage, "deps")
        graph[name] = [
            up for up, up_outs in outs.items() if up != name
            and any(d == o or d.startswith(o.rstrip("/") + "/") for d in deps for o in up_outs)
        ]
    return graph


def stage_commands(dvc_yaml: Path) -> dict[str, str]:
    """The shell command each task runs. Locally always ``dvc repro --single-item``."""
    return {name: f"dvc repro --single-item {name}" for name in stage_graph(dvc_yaml)}


def torchrun_command(dvc_yaml: Path, stage: str, gpus: int) -> str:
    """The stage's own dvc.yaml command on ``gpus`` processes, recorded in dvc.lock after.

    Skipped (like ``dvc repro``) when ``dvc status`` finds the stage up to date.
    """
    cmd = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]["cmd"]
    if not cmd.startswith("python -m "):
        raise ValueError(f"dvc.yaml: stage {stage}: cmd must start with 'python -m' for torchrun, got {cmd!r}")
    launch = f"torchrun --standalone --nproc_per_node {gpus} -m {cmd.removeprefix('python -m ')}"
    return (f"if dvc status --quiet {stage}; then echo '{stage}: up to date'; "
            f"else {launch} && dvc commit --force {stage}; fi")


def _profiles() -> list[str]:
    return sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))


def _on_failure(context) -> None:
    """Record a failed task on the DAG run's pipeline run in MLflow (created if the failure
    came before any stage, e.g. a bad override): the failing task, its one-line error, and
    the run marked FAILED."""
    if str(REPO) not in sys.path:  # the pipeline of the repository this DAG drives
        sys.path.insert(0, str(REPO))
    from pipeline.redaction import scrub_secrets

    try:
        import mlflow

        from pipeline import tracking

        experiment_id = tracking.setup(root=REPO)
        client = mlflow.MlflowClient()
        ti = context["task_instance"]
        tags = {**tracking.provenance_tags(REPO), "airflow_dag_id": DAG_ID,
                "airflow_run_id": context["run_id"]}
        parent = tracking.pipeline_run(client, experiment_id, f"airflow-{context['run_id']}", tags)
        error = scrub_secrets(str(context.get("exception") or "failed"))[:500]
        client.set_tag(parent, "failed_task", ti.task_id)
        client.set_tag(parent, "error", f"{ti.task_id}: {error}")
        client.set_tag(parent, f"airflow_failure.{ti.task_id}", f"try {ti.try_number}: {error}")
        client.set_terminated(parent, "FAILED")
    except Exception as e:  # never mask the task's own failure
        print(scrub_secrets(f"could not record the failure in MLflow: {e}"), file=sys.stderr)


# What every task sees: the MLflow run group of this DAG run and the run's params.
TASK_ENV = {
    # Groups the stage runs under one MLflow parent run per DAG run.
    "STYLEGAN_MOBILE_RUN_GROUP": "airflow-{{ run_id }}",
    # Names the DVC experiment a run with a profile or overrides is saved as (run_params.py).
    "STYLEGAN_MOBILE_RUN_ID": "{{ run_id }}",
    "STYLEGAN_MOBILE_PROFILE": "{{ params.profile or '' }}",
    "STYLEGAN_MOBILE_OVERRIDES": "{{ params.overrides | tojson }}",
    "DVC_NO_ANALYTICS": "1",
}


class ProjectTask(BashOperator):
    """A task of the project: its command runs through ``dags/run_task.py`` with the project
    environment first on PATH, set inside the command (a worker's shell may read start-up
    files, ~/.bashrc under sshd or systemd, that put another python first). Exit status 2
    (bad input) fails the task for good, without retries; any failure's message is the
    command's last line (the stage's one-line error), not a generic one."""

    def __init__(self, *, command: str, **kwargs) -> None:
        self.command = command  # what the task does (bash_command wraps it)
        bin_dir = shlex.quote(ENV_BIN)
        super().__init__(bash_command=f'export PATH={bin_dir}:"$PATH"; '
                                      f"exec {bin_dir}/python dags/run_task.py {command}", **kwargs)

    def _run_inline_command(self, bash_path: str, env: dict):  # BashOperator's runner, wrapped
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        result = super()._run_inline_command(bash_path=bash_path, env=env)
        if result.exit_code == BAD_INPUT:
            raise AirflowFailException(f"bad input, not retried: {result.output}")
        if result.exit_code != 0:
            raise AirflowException(f"exit status {result.exit_code}: {result.output}")
        return result


def local_task(task_id: str, command: str, timeout: timedelta, retries: int | None = None):
    extra = {} if retries is None else {"retries": retries}
    return ProjectTask(task_id=task_id, command=command, cwd=str(REPO), env=TASK_ENV,
                       append_env=True, execution_timeout=timeout, **extra)


def pod_task(task_id: str, command: str, timeout: timedelta, gpus: int = 0,
             retries: int | None = None):
    """A pod of the project image on the shared workspace (infra/k8s/pod-templates/)."""
    # Only the cluster variant loads the Kubernetes client (seconds): every local task
    # process parses this file again before it runs.
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
    from kubernetes.client import models as k8s

    template = K8S["templates"] / ("gpu-stage.yaml" if gpus else "cpu-stage.yaml")
    resources = None
    if gpus:
        per_gpu = {"cpu": 8, "memory": 48}  # cores and GiB per GPU, as in gpu-stage.yaml
        resources = k8s.V1ResourceRequirements(
            requests={"cpu": str(per_gpu["cpu"] * gpus), "memory": f"{per_gpu['memory'] * gpus}Gi",
                      "nvidia.com/gpu": str(gpus)},
            limits={"memory": f"{per_gpu['memory'] * gpus}Gi", "nvidia.com/gpu": str(gpus)},
        )
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"stylegan-mobile-{task_id.replace('_', '-')}",
        namespace=K8S["namespace"],
        image=K8S["image"],
        pod_template_dict=yaml.safe_load(template.read_text()),
        cmds=["bash", "-c"],
        arguments=[command],
        env_vars={
            **TASK_ENV,
            # what pipeline.tracking tags runs with (BashOperator tasks inherit them)
            "AIRFLOW_CTX_DAG_ID": "{{ dag.dag_id }}",
            "AIRFLOW_CTX_DAG_RUN_ID": "{{ run_id }}",
            "AIRFLOW_CTX_TASK_ID": task_id,
        },
        container_resources=resources,
        labels={"app.kubernetes.io/part-of": "stylegan-mobile", "stylegan-mobile/stage": task_id},
        get_logs=True,
        on_finish_action="delete_succeeded_pod",
        execution_timeout=timeout,
        **({} if retries is None else {"retries": retries}),
    )


def build_tasks(dvc_yaml: Path, runner: str) -> dict:
    """The stage tasks (by stage name), wired in dependency order."""
    graph = stage_graph(dvc_yaml)
    commands = stage_commands(dvc_yaml)
    tasks = {}
    for name in graph:
        timeout = STAGE_TIMEOUTS.get(name, DEFAULT_TIMEOUT)
        if runner == "local":
            tasks[name] = local_task(name, commands[name], timeout)
        elif name == "distill" and K8S["distill_gpus"] > 1:
            tasks[name] = pod_task(name, torchrun_command(dvc_yaml, name, K8S["distill_gpus"]), timeout,
                                   gpus=K8S["distill_gpus"])
        else:
            tasks[name] = pod_task(name, commands[name], timeout, gpus=int(name in K8S["gpu_stages"]))
    for name, upstream in graph.items():
        for up in upstream:
            tasks[up] >> tasks[name]
    return tasks


if RUNNER not in ("local", "kubernetes"):
    raise ValueError(f"STYLEGAN_MOBILE_RUNNER must be 'local' or 'kubernetes', got {RUNNER!r}")

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
        "execution_timeout": DEFAULT_TIMEOUT,
        "on_failure_callback": _on_failure,
    },
    params={
        "profile": Param(None, type=["null", "string"], enum=[None, *_profiles()],
                         description="a profile in profiles/ applied over params.yaml (none: params.yaml)"),
        "overrides": Param([], type="array",
                           items={"type": "string", "pattern": r"^[+~]{0,2}[A-Za-z_][A-Za-z0-9_.\-]*(=.*)?$"},
                           description="key=value overrides after the profile, as dvc exp run -S "
                                       "(e.g. distill.steps=1000)"),
    },
    tags=["stylegan-mobile", "dvc", RUNNER],
) as dag:
    run_task = local_task if RUNNER == "local" else pod_task
    # params and restore fail only on bad input or a broken workspace: never retried
    params = run_task("params", "python dags/run_params.py apply", timedelta(minutes=10), retries=0)
    restore = run_task("restore_params", "python dags/run_params.py restore", timedelta(minutes=10),
                       retries=0)
    graph = stage_graph(REPO / "dvc.yaml")
    stage_tasks = build_tasks(REPO / "dvc.yaml", RUNNER)
    firsts = [stage_tasks[n] for n, up in graph.items() if not up]
    lasts = [stage_tasks[n] for n in graph if not any(n in up for up in graph.values())]
    params >> firsts
    lasts >> restore.as_teardown(setups=params)
