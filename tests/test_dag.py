"""The nightly DAG: tasks derived from dvc.yaml, run params, the cluster variant, parse time."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from tests.conftest import REPO

DAG_FILE = REPO / "dags" / "nightly.py"


def load_dag_module(name: str, runner: str, monkeypatch: pytest.MonkeyPatch | None = None):
    os.environ.setdefault("AIRFLOW_HOME", str(Path(os.environ.get("TMPDIR", "/tmp")) / "stylegan-airflow-tests"))
    old = os.environ.get("STYLEGAN_MOBILE_RUNNER")
    os.environ["STYLEGAN_MOBILE_RUNNER"] = runner
    try:
        spec = importlib.util.spec_from_file_location(name, DAG_FILE)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if old is None:
            os.environ.pop("STYLEGAN_MOBILE_RUNNER")
        else:
            os.environ["STYLEGAN_MOBILE_RUNNER"] = old
    return module


@pytest.fixture(scope="module")
def nightly():
    return load_dag_module("nightly_dag", "local")


@pytest.fixture(scope="module")
def cluster():
    return load_dag_module("nightly_dag_k8s", "kubernetes")


def stage_names() -> list[str]:
    return list(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"])


def test_tasks_are_the_dvc_stages_with_retries_backoff_timeouts_and_no_catchup(nightly):
    dag = nightly.dag
    assert [t for t in dag.task_ids if t not in ("params", "restore_params")] == stage_names()
    assert dag.catchup is False and dag.schedule is not None
    for name in stage_names():
        task = dag.get_task(name)
        assert task.retries >= 1 and task.retry_exponential_backoff
        assert task.execution_timeout == nightly.STAGE_TIMEOUTS.get(name, nightly.DEFAULT_TIMEOUT)
        assert task.command == f"dvc repro --single-item {name}"
        # the project's own python and dvc, whatever the worker's shell start-up files say
        assert task.bash_command == (f'export PATH={nightly.ENV_BIN}:"$PATH"; exec '
                                     f"{nightly.ENV_BIN}/python dags/run_task.py {task.command}")
        assert task.cwd == str(REPO)
        assert task.on_failure_callback
    assert dag.get_task("distill").execution_timeout > dag.get_task("fetch_teacher").execution_timeout


def test_task_order_follows_the_data_dependencies_in_dvc_yaml(nightly, tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {
        "a": {"cmd": "x", "deps": ["code/a.py"], "outs": ["artifacts/a"]},
        "b": {"cmd": "x", "deps": ["artifacts/a/model.bin", "code/b.py"],
              "outs": [{"artifacts/b": {"cache": True}}]},
        "c": {"cmd": "x", "deps": ["artifacts/a", "artifacts/b"], "outs": ["c.json"],
              "metrics": [{"metrics/c.json": {"cache": False}}], "plots": ["plots/c.csv"]},
        "d": {"cmd": "x", "deps": ["artifacts/ab"]},  # a prefix, not a sub-path
        "e": {"cmd": "x", "deps": ["metrics/c.json"]},  # a metrics file is an output too
    }}))
    assert nightly.stage_graph(tmp_path / "dvc.yaml") == {
        "a": [], "b": ["a"], "c": ["a", "b"], "d": [], "e": ["c"]}


def test_the_real_stages_run_in_pipeline_order(nightly):
    dag = nightly.dag
    upstream = {name: dag.get_task(name).upstream_task_ids for name in stage_names()}
    assert "fetch_teacher" in upstream["distill"] and "distill" in upstream["search"]
    if "evaluate" in upstream:
        assert "search" in upstream["evaluate"] and "evaluate" in upstream["export"]


def test_a_manual_run_takes_a_profile_and_overrides_applied_by_a_setup_task(nightly):
    dag = nightly.dag
    profiles = sorted(p.stem for p in (REPO / "profiles").glob("*.yaml"))
    schema = dag.params.get_param("profile").schema
    assert dag.params["profile"] is None and schema["enum"] == [None, *profiles]
    assert dag.params["overrides"] == []
    setup, teardown = dag.get_task("params"), dag.get_task("restore_params")
    assert setup.is_setup and teardown.is_teardown
    assert setup.command == "python dags/run_params.py apply"
    assert teardown.command == "python dags/run_params.py restore"
    assert setup.retries == teardown.retries == 0  # bad input or a broken workspace: retrying cannot help
    for name in stage_names():  # every stage runs after the params are written
        assert "params" in dag.get_task(name).get_flat_relative_ids(upstream=True)
        assert name in teardown.get_flat_relative_ids(upstream=True)
    # The run's params reach the task as environment variables, never through the shell.
    context = {"params": {"profile": "ffhq256", "overrides": ["distill.steps=10", "search.seed=3"]},
               "run_id": "manual__1"}
    env = setup.render_template(setup.env, context, jinja_env=dag.get_template_env())
    assert env["STYLEGAN_MOBILE_PROFILE"] == "ffhq256"
    assert json.loads(env["STYLEGAN_MOBILE_OVERRIDES"]) == ["distill.steps=10", "search.seed=3"]
    assert env["STYLEGAN_MOBILE_RUN_GROUP"] == "airflow-manual__1"
    assert env["STYLEGAN_MOBILE_RUN_ID"] == "manual__1"  # names the run's DVC experiment
    default = setup.render_template(setup.env, {"params": dict(dag.params), "run_id": "r"},
                                    jinja_env=dag.get_template_env())
    assert default["STYLEGAN_MOBILE_PROFILE"] == "" and default["STYLEGAN_MOBILE_OVERRIDES"] == "[]"


@pytest.fixture
def workspace(tmp_path) -> Path:
    """params.yaml, profiles/ and dags/run_params.py as in the repository."""
    (tmp_path / ".dvc").mkdir()
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    shutil.copytree(REPO / "dags", tmp_path / "dags")
    return tmp_path


def run_params(workspace: Path, action: str, profile: str = "", overrides=()) -> subprocess.CompletedProcess:
    env = {**os.environ, "STYLEGAN_MOBILE_PROFILE": profile,
           "STYLEGAN_MOBILE_OVERRIDES": json.dumps(list(overrides))}
    return subprocess.run([sys.executable, "dags/run_params.py", action], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=120)


def test_run_params_applies_a_profile_and_overrides_then_restores_the_committed_file(workspace):
    committed = (workspace / "params.yaml").read_bytes()
    applied = run_params(workspace, "apply", "ffhq256", ["distill.steps=500000", "search.seed=5"])
    assert applied.returncode == 0, applied.stderr
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    profile = yaml.safe_load((workspace / "profiles/ffhq256.yaml").read_text())
    assert params["profile"] == "ffhq256"
    assert params["fetch_teacher"]["source"] == profile["fetch_teacher"]["source"]
    assert params["distill"]["steps"] == 500000 and params["search"]["seed"] == 5  # overrides win
    assert params["search"]["budgets"] == {**yaml.safe_load(committed)["search"]["budgets"],
                                           **profile["search"]["budgets"]}

    restored = run_params(workspace, "restore")
    assert restored.returncode == 0 and (workspace / "params.yaml").read_bytes() == committed
    assert run_params(workspace, "restore").returncode == 0  # nothing to restore: fine


def test_run_params_without_params_leaves_the_file_alone(workspace):
    committed = (workspace / "params.yaml").read_bytes()
    assert run_params(workspace, "apply").returncode == 0
    assert (workspace / "params.yaml").read_bytes() == committed
    manifest = json.loads((workspace / ".dvc/tmp/airflow-base/manifest.json").read_text())
    assert manifest["overrides"] == [] and manifest["existed"] == ["params.yaml"]  # no dvc.yaml here
    assert run_params(workspace, "restore").returncode == 0
    assert (workspace / "params.yaml").read_bytes() == committed
    assert not (workspace / ".dvc/tmp/airflow-base").exists()


@pytest.mark.parametrize("profile, overrides, names", [
    ("", ["distill.no_such_key=1"], "distill.no_such_key"),
    ("", ["distill.steps=-1"], "distill.steps"),
    ("no-such-profile", [], "no-such-profile"),
])
def test_run_params_refuses_bad_input_with_one_line_and_keeps_the_file(workspace, profile, overrides, names):
    committed = (workspace / "params.yaml").read_bytes()
    result = run_params(workspace, "apply", profile, overrides)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and names in result.stderr
    assert (workspace / "params.yaml").read_bytes() == committed
    assert not (workspace / ".dvc/tmp/airflow-base").exists()  # the teardown does not run after it


def test_run_params_first_restores_what_an_interrupted_run_left(workspace):
    committed = (workspace / "params.yaml").read_bytes()
    assert run_params(workspace, "apply", "", ["search.seed=9"]).returncode == 0  # teardown never ran
    again = run_params(workspace, "apply", "", ["search.seed=4"])
    assert again.returncode == 0 and "interrupted" in again.stdout
    assert yaml.safe_load((workspace / "params.yaml").read_text())["search"]["seed"] == 4
    run_params(workspace, "restore")
    assert (workspace / "params.yaml").read_bytes() == committed


# A two-stage DVC project in git, with the project's params.yaml: ``make`` reads search.seed
# into a cached output, a metric and a plot; ``report`` reads make's output and fails when
# $FAIL_REPORT is set (dvc repro has removed its outputs by then, as for a real stage).
MINI_STAGES = {
    "make": {"cmd": "python make.py", "deps": ["make.py"], "params": ["search.seed"], "outs": ["artifacts/make"],
             "metrics": [{"metrics/make.json": {"cache": False}}], "plots": [{"plots/make.csv": {"cache": False}}]},
    "report": {"cmd": "python report.py", "deps": ["artifacts/make", "report.py"], "outs": ["artifacts/report"],
               "metrics": [{"metrics/report.json": {"cache": False}}]},
}
MAKE_PY = """import json, os, yaml
OFFSET = 0
seed = yaml.safe_load(open("params.yaml"))["search"]["seed"] + OFFSET
for d in ("artifacts/make", "metrics", "plots"):
    os.makedirs(d, exist_ok=True)
open("artifacts/make/value.txt", "w").write(str(seed))
json.dump({"seed": seed}, open("metrics/make.json", "w"))
open("plots/make.csv", "w").write(f"step,seed\\n0,{seed}\\n")
"""
REPORT_PY = """import json, os, sys
if os.environ.get("FAIL_REPORT"):
    sys.exit("report: error: failing as asked")
os.makedirs("artifacts/report", exist_ok=True)
value = open("artifacts/make/value.txt").read()
open("artifacts/report/report.txt", "w").write(f"seed {value}")
json.dump({"seed": int(value)}, open("metrics/report.json", "w"))
"""
GIT_USER = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, env={**os.environ, **GIT_USER}, capture_output=True,
                          text=True, check=True).stdout


def dvc(repo: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    from tests.conftest import ENV_BIN, env_with_venv

    result = subprocess.run([f"{ENV_BIN}/dvc", *args], cwd=repo, env=env_with_venv(**env), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0 or not check, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def dvc_template(tmp_path_factory) -> Path:
    """The mini project, reproduced and committed (copied for each test)."""
    repo = tmp_path_factory.mktemp("dvc-template") / "repo"
    (repo / "metrics").mkdir(parents=True)
    shutil.copy2(REPO / "params.yaml", repo / "params.yaml")
    shutil.copytree(REPO / "dags", repo / "dags", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": MINI_STAGES}, sort_keys=False))
    (repo / "make.py").write_text(MAKE_PY)
    (repo / "report.py").write_text(REPORT_PY)
    (repo / ".gitignore").write_text("/artifacts/\n/plots/\n__pycache__/\n")
    git(repo, "init", "-q")
    dvc(repo, "init", "-q")
    dvc(repo, "repro", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    return repo


@pytest.fixture
def dvc_project(dvc_template, tmp_path) -> Path:
    return Path(shutil.copytree(dvc_template, tmp_path / "repo", symlinks=True))


def dag_step(repo: Path, action: str, overrides=(), **env: str) -> subprocess.CompletedProcess:
    """``run_params.py apply|restore`` as the DAG's task runs it, on a worker whose git has no
    user configured (empty HOME): dvc exp save needs the fallback identity."""
    from tests.conftest import ENV_BIN, env_with_venv

    home = repo.parent / "home"
    home.mkdir(exist_ok=True)
    task_env = env_with_venv(HOME=str(home), GIT_CONFIG_NOSYSTEM="1", STYLEGAN_MOBILE_PROFILE="",
                             STYLEGAN_MOBILE_OVERRIDES=json.dumps(list(overrides)),
                             STYLEGAN_MOBILE_RUN_ID="manual__2026-12-03T06:12:55.120+00:00", **env)
    for name in GIT_USER:
        task_env.pop(name, None)
    result = subprocess.run([f"{ENV_BIN}/python", "dags/run_params.py", action], cwd=repo, env=task_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_plain_run_keeps_its_lock_and_metrics_and_gets_back_what_a_failed_stage_deleted(dvc_project):
    """The nightly without overrides updates dvc.lock and metrics (the committed params'
    results); a stage that failed has lost its metrics and outputs: they come back."""
    repo = dvc_project
    (repo / "make.py").write_text(MAKE_PY.replace("OFFSET = 0", "OFFSET = 7"))  # new code, committed
    git(repo, "commit", "-qam", "make: offset 7")
    old_report = (repo / "metrics/report.json").read_bytes()
    dag_step(repo, "apply")
    dvc(repo, "repro", "--single-item", "make")
    failed = dvc(repo, "repro", "--single-item", "report", check=False, FAIL_REPORT="1")
    assert failed.returncode != 0 and not (repo / "metrics/report.json").exists()
    assert not (repo / "artifacts/report").exists()

    remote = repo.parent / "shared.git"  # where a team shares experiments
    git(repo.parent, "init", "-q", "--bare", str(remote))
    git(repo, "remote", "add", "origin", str(remote))

    restored = dag_step(repo, "restore")
    assert "metrics/report.json" in restored.stdout and "warning" not in restored.stdout, restored.stdout
    seed = yaml.safe_load((repo / "params.yaml").read_text())["search"]["seed"]
    assert json.loads((repo / "metrics/make.json").read_text()) == {"seed": seed + 7}  # kept
    assert git(repo, "status", "--porcelain").splitlines() == [" M dvc.lock", " M metrics/make.json"]
    # ... and the run is a DVC experiment too, shared through the git remote
    name = "airflow-manual__2026-12-03T06-12-55.120-00-00"
    assert f"the run is also DVC experiment {name}" in restored.stdout
    assert f"pushed DVC experiment {name} to origin" in restored.stdout
    assert dvc(repo, "exp", "list", "--name-only").stdout.split() == [name]
    assert git(remote, "for-each-ref", "--format=%(refname)", "refs/exps").strip().endswith(name)
    assert (repo / "metrics/report.json").read_bytes() == old_report  # put back
    assert (repo / "artifacts/report/report.txt").read_text() == f"seed {seed}"  # checked out (the lock's)
    assert not (repo / ".dvc/tmp/airflow-base").exists()


def test_an_overridden_run_is_a_dvc_experiment_and_leaves_the_workspace_as_it_found_it(dvc_project):
    """A run with overrides, whose second stage fails: the stage that ran is saved as the DVC
    experiment airflow-<run id>; params.yaml, dvc.lock, metrics, plots and the cached outputs
    are as committed again, so git sees nothing and the next plain run has nothing to do."""
    repo = dvc_project
    seed = yaml.safe_load((repo / "params.yaml").read_text())["search"]["seed"]
    status_before = git(repo, "status", "--porcelain", "--untracked-files=all")
    dag_step(repo, "apply", ["search.seed=4242"])
    dvc(repo, "repro", "--single-item", "make")
    dvc(repo, "repro", "--single-item", "report", check=False, FAIL_REPORT="1")
    assert (repo / "artifacts/make/value.txt").read_text() == "4242"

    restored = dag_step(repo, "restore")
    name = "airflow-manual__2026-12-03T06-12-55.120-00-00"
    assert f"DVC experiment {name}: make " in restored.stdout and "warning" not in restored.stdout, restored.stdout
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == status_before == ""
    assert (repo / "artifacts/make/value.txt").read_text() == str(seed)
    assert (repo / "artifacts/report/report.txt").read_text() == f"seed {seed}"
    assert (repo / "plots/make.csv").read_text().endswith(f"0,{seed}\n")
    assert "up to date" in dvc(repo, "status").stdout
    assert dvc(repo, "exp", "list", "--name-only").stdout.split() == [name]
    (ref,) = [r for r in git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split() if r.endswith(name)]
    saved = yaml.safe_load(git(repo, "show", f"{ref}:dvc.lock"))["stages"]
    committed = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert saved["make"]["params"]["params.yaml"]["search.seed"] == 4242
    assert saved["report"] == committed["report"]  # the failed stage: not recorded as run
    assert json.loads(git(repo, "show", f"{ref}:metrics/make.json")) == {"seed": 4242}


@pytest.mark.parametrize("run_id", [
    "manual__2026-12-03T06:12:55.120+00:00", "scheduled__2026-12-03T02:00:00+00:00",
    "my run..with @{odd} chars/and.lock", "-.x.lock",
])
def test_a_dag_run_id_becomes_a_valid_dvc_experiment_name(run_id):
    spec = importlib.util.spec_from_file_location("run_params", REPO / "dags" / "run_params.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    name = module.experiment_name(run_id)
    assert name.startswith("airflow-") and "/" not in name
    check = subprocess.run(["git", "check-ref-format", f"refs/exps/x/{name}"], capture_output=True)
    assert check.returncode == 0, name
    assert module.experiment_name("") is None  # outside Airflow: DVC picks a name


def test_the_cluster_variant_runs_every_task_as_a_pod_and_distill_under_torchrun(cluster):
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    dag = cluster.dag
    assert [t for t in dag.task_ids if t not in ("params", "restore_params")] == stage_names()
    assert all(isinstance(t, KubernetesPodOperator) for t in dag.tasks)
    gpus = cluster.K8S["distill_gpus"]
    context = {"params": {"profile": None, "overrides": []}, "run_id": "scheduled__1", "dag": dag}

    def pod(task_id: str):
        task = dag.get_task(task_id)
        task.render_template_fields({**context, "task": task})
        task.__dict__["hook"] = SimpleNamespace(is_in_cluster=True)  # no cluster here
        return task.build_pod_request_obj()

    def gpu_requests(p) -> str | None:
        resources = p.spec.containers[0].resources
        return (resources.requests or {}).get("nvidia.com/gpu") if resources else None

    distill = pod("distill")
    (container,) = distill.spec.containers
    assert container.image == cluster.K8S["image"] and distill.metadata.namespace == cluster.K8S["namespace"]
    assert container.resources.limits["nvidia.com/gpu"] == container.resources.requests["nvidia.com/gpu"] == str(gpus)
    script = container.args[0]
    dvc_cmd = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["distill"]["cmd"]
    assert f"torchrun --standalone --nproc_per_node {gpus} -m {dvc_cmd.removeprefix('python -m ')}" in script
    assert "dvc status --quiet distill" in script and "dvc commit --force distill" in script
    assert container.working_dir == "/workspace"
    assert {v.name for v in distill.spec.volumes} >= {"workspace", "dshm"}
    env = {e.name: e.value for e in container.env}
    assert env["STYLEGAN_MOBILE_RUN_GROUP"] == "airflow-scheduled__1"
    assert env["AIRFLOW_CTX_DAG_ID"] == cluster.DAG_ID and env["AIRFLOW_CTX_TASK_ID"] == "distill"

    for name in stage_names():
        p = pod(name)
        want = None if name not in cluster.K8S["gpu_stages"] else "1" if name != "distill" else str(gpus)
        assert gpu_requests(p) == want, name
        if name != "distill":
            assert p.spec.containers[0].args == [f"dvc repro --single-item {name}"]
    assert pod("params").spec.containers[0].args == ["python dags/run_params.py apply"]


def test_torchrun_command_refuses_a_stage_that_is_not_a_python_module(nightly, tmp_path):
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {"cmd": "bash train.sh"}}}))
    with pytest.raises(ValueError, match="python -m"):
        nightly.torchrun_command(tmp_path / "dvc.yaml", "s", 2)


def test_the_dag_file_imports_nothing_heavy_at_module_level():
    """Airflow re-parses DAG files often (and every task process once more): torch, mlflow
    and the pipeline load only in tasks, the Kubernetes client only in the cluster variant."""
    probe = (
        "import sys, runpy; runpy.run_path(sys.argv[1]); "
        "heavy = [m for m in ('torch', 'mlflow', 'pipeline', 'dvc', 'kubernetes') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(DAG_FILE)],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# Parse time as Airflow's DAG processor sees it: the airflow modules the file imports are
# imported once before it forks the parsing process (parsing_pre_import_modules), then
# the file is executed. Measured in a fresh interpreter, best of 3.
PARSE_PROBE = """
import importlib, json, runpy, sys, time
from airflow.utils.file import iter_airflow_imports
t0 = time.perf_counter()
for module in iter_airflow_imports(sys.argv[1]):
    importlib.import_module(module)
t1 = time.perf_counter()
times = []
for _ in range(3):
    start = time.perf_counter()
    runpy.run_path(sys.argv[1])
    times.append(time.perf_counter() - start)
print(json.dumps({"pre_import_s": t1 - t0, "parse_s": min(times), "first_parse_s": times[0]}))
"""


@pytest.mark.parametrize("runner", ["local", "kubernetes"])
def test_the_dag_file_parses_in_well_under_a_second(runner, tmp_path):
    env = {**os.environ, "STYLEGAN_MOBILE_RUNNER": runner, "AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PARSE_PROBE, str(DAG_FILE)], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\n{runner}: DAG file parse {figures['parse_s'] * 1000:.0f} ms "
          f"(first {figures['first_parse_s'] * 1000:.0f} ms; airflow imports before it "
          f"{figures['pre_import_s']:.2f} s)")
    # A local task process parses the file cold: nothing slow may load. The cluster
    # variant's first parse loads the Kubernetes client (its tasks need it anyway).
    assert figures["first_parse_s" if runner == "local" else "parse_s"] < 1.0


def decoy_shell(tmp_path: Path) -> dict[str, str]:
    """A worker whose bash reads ~/.bashrc (as a scheduler started under systemd or nohup
    sees it: no shell level, SSH_CLIENT set), which puts a decoy ``python`` and ``dvc``
    first on PATH: tasks must not run them."""
    decoy, home = tmp_path / "decoy-bin", tmp_path / "home"
    decoy.mkdir()
    home.mkdir()
    for name in ("python", "python3", "dvc"):
        (decoy / name).write_text("#!/bin/sh\necho 'decoy executable ran' >&2\nexit 97\n")
        (decoy / name).chmod(0o755)
    (home / ".bashrc").write_text(f'export PATH="{decoy}:$PATH"\n')
    return {"HOME": str(home), "SSH_CLIENT": "127.0.0.1 50000 22", "SHLVL": "0"}


def airflow_workspace(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the repository trimmed to fetch_teacher with tiny params, committed as a
    checkout that never ran (no dvc.lock), an Airflow home with its database, and the
    environment of a worker with a decoy python (see :func:`decoy_shell`)."""
    from tests.conftest import ENV_BIN, copy_repo, env_with_venv, tiny_params

    repo = copy_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"fetch_teacher": stages["fetch_teacher"]}}))
    (repo / "dvc.lock").unlink()
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tiny params, fetch_teacher only")
    home = tmp_path / "airflow"
    env = env_with_venv(
        AIRFLOW_HOME=str(home), AIRFLOW__CORE__DAGS_FOLDER=str(repo / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home / 'airflow.db'}",
        STYLEGAN_MOBILE_REPO=str(repo), MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
        **decoy_shell(tmp_path))
    subprocess.run([f"{ENV_BIN}/airflow", "db", "migrate"], cwd=repo, env=env, capture_output=True, check=True)
    return repo, env


@pytest.mark.parametrize("script, status, last", [
    # dvc repro reports the stage's exit 2 with its own 255: bad input, said as such
    ("echo 'fetch_teacher: error: /x.pt: no such checkpoint file'; echo \"ERROR: failed to "
     "reproduce 'fetch_teacher': failed to run: python -m components.fetch_teacher, exited "
     "with 2\"; exit 255", 2, "fetch_teacher: error: /x.pt: no such checkpoint file"),
    ("echo 'distill: error: boom'; echo \"ERROR: failed to run: python -m x, exited with 1\"; "
     "exit 255", 255, "distill: error: boom"),  # a crash: retried as before
    ("echo 'error: params.yaml: distill.steps: bad'; exit 2", 2, "error: params.yaml: distill.steps: bad"),
    ("echo fine", 0, "fine"),
])
def test_run_task_says_bad_input_with_the_stages_one_line_error_last(script, status, last):
    result = subprocess.run([sys.executable, str(REPO / "dags/run_task.py"), "bash", "-c", script],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == status
    assert result.stdout.strip().splitlines()[-1] == last


def test_a_task_that_exits_2_fails_for_good_with_its_last_line(nightly, tmp_path):
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    task = nightly.ProjectTask(task_id="t", command="bash -c 'echo distill: error: bad; exit 2'",
                               cwd=str(REPO))
    with pytest.raises(AirflowFailException, match="bad input, not retried: distill: error: bad"):
        task._run_inline_command(bash_path="bash", env=dict(os.environ))
    task = nightly.ProjectTask(task_id="t", command="bash -c 'echo oops; exit 3'", cwd=str(REPO))
    with pytest.raises(AirflowException, match="exit status 3: oops"):
        task._run_inline_command(bash_path="bash", env=dict(os.environ))


class LiveAirflow:
    """A real Airflow on loopback: API server, scheduler (LocalExecutor) and DAG processor as
    separate processes on one SQLite database, sharing one JWT secret; every admin (simple auth
    manager), the DAG unpaused at creation and no cron runs (manual runs only)."""

    DAG = "stylegan_mobile_nightly"

    def __init__(self, env: dict[str, str], folder: Path) -> None:
        from tests.conftest import free_port

        self.folder, port = folder, free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**env,
                    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                    "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                    "AIRFLOW__API__BASE_URL": self.url,
                    "AIRFLOW__API__PORT": str(port),
                    "AIRFLOW__API_AUTH__JWT_SECRET": os.urandom(16).hex(),
                    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # no scheduled run of 02:00
                    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        self.processes: dict[str, subprocess.Popen] = {}
        self.headers: dict[str, str] = {}

    def start(self) -> None:
        from tests.conftest import ENV_BIN

        commands = {"api-server": ["api-server", "--host", "127.0.0.1", "--port", self.env["AIRFLOW__API__PORT"],
                                   "--workers", "1"],
                    "scheduler": ["scheduler"], "dag-processor": ["dag-processor"]}
        for name, args in commands.items():
            with (self.folder / f"{name}.log").open("w") as log:
                self.processes[name] = subprocess.Popen(
                    [f"{ENV_BIN}/airflow", *args], cwd=self.folder, env=self.env, stdout=log,
                    stderr=subprocess.STDOUT, start_new_session=True)

    def logs(self) -> str:
        return "\n".join(f"--- {name}.log\n" + (self.folder / f"{name}.log").read_text()[-3000:]
                         for name in self.processes)

    def wait_until(self, what: str, probe, timeout_s: float):
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            for name, process in self.processes.items():
                assert process.poll() is None, f"airflow {name} exited\n{self.logs()}"
            try:
                if found := probe():
                    return found
            except OSError:  # requests' ConnectionError: not up yet
                pass
            assert time.monotonic() < deadline, f"{what}: not after {timeout_s} s\n{self.logs()}"
            time.sleep(0.5)

    def api(self, method: str, path: str, **kwargs):
        import requests

        return requests.request(method, f"{self.url}/api/v2{path}", headers=self.headers, timeout=30, **kwargs)

    def ready(self, timeout_s: float = 180) -> None:
        """Logged in (POST /auth/token) and the DAG parsed."""
        import requests

        def token():
            answer = requests.post(f"{self.url}/auth/token", json={"username": "admin", "password": "admin"},
                                   timeout=10)
            return answer.status_code == 201 and answer.json()["access_token"]

        self.headers = {"Authorization": f"Bearer {self.wait_until('API server', token, timeout_s)}"}
        self.wait_until("DAG parsed", lambda: self.api("GET", f"/dags/{self.DAG}").ok, timeout_s)

    def trigger(self, conf: dict) -> str:
        answer = self.api("POST", f"/dags/{self.DAG}/dagRuns", json={"logical_date": None, "conf": conf})
        assert answer.status_code == 200, answer.text
        return answer.json()["dag_run_id"]

    def wait(self, run_id: str, timeout_s: float) -> tuple[str, dict[str, dict]]:
        """The run's final state and its task instances by task id."""
        from urllib.parse import quote

        path = f"/dags/{self.DAG}/dagRuns/{quote(run_id, safe='')}"
        state = self.wait_until(f"run {run_id}", lambda: self.api("GET", path).json()["state"] in ("success", "failed")
                                and self.api("GET", path).json()["state"], timeout_s)
        tasks = self.api("GET", f"{path}/taskInstances").json()["task_instances"]
        return state, {t["task_id"]: t for t in tasks}

    def stop(self) -> None:
        import signal

        for process in self.processes.values():  # each with the workers it started
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def pipeline_runs(env: dict[str, str], run_id: str) -> list:
    """The MLflow runs of a DAG run (its pipeline run and stage runs)."""
    import mlflow

    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    try:
        return mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list",
                                  filter_string=f"tags.airflow_run_id = '{run_id}'")
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_a_live_scheduler_runs_an_overridden_run_as_a_dvc_experiment_and_fails_bad_input_at_once(tmp_path):
    """Issue 18's acceptance test: Airflow 3 as deployed (API server, scheduler, DAG processor;
    LocalExecutor, SQLite) on a committed copy of the repository trimmed to fetch_teacher, on a
    worker whose shell start-up files put a decoy python first, runs triggered through the REST
    API. A run with tiny overrides succeeds: the stage ran with them, the run is the DVC
    experiment its MLflow pipeline run names, the stage run is nested under that pipeline run,
    both tagged with the DAG run, and git status is clean afterwards. Bad input fails the run
    at once, in one try, with one line on its pipeline run: an override the params refuse, and
    one the stage refuses (exit 2 behind dvc repro's 255; the metrics it deleted come back)."""
    import time

    from tests.conftest import ENV_BIN

    repo, env = airflow_workspace(tmp_path)
    airflow = LiveAirflow(env, tmp_path / "airflow")
    airflow.start()

    def experiments() -> list[str]:
        return subprocess.run([f"{ENV_BIN}/dvc", "exp", "list", "--name-only"], cwd=repo, env=env,
                              capture_output=True, text=True, check=True).stdout.split()

    try:
        airflow.ready()
        started = time.monotonic()
        run_id = airflow.trigger({"overrides": ["fetch_teacher.random.seed=3"]})
        state, tasks = airflow.wait(run_id, timeout_s=300)
        durations = ", ".join(f"{t} {ti['duration']:.0f} s" for t, ti in tasks.items())
        print(f"\noverridden run: {time.monotonic() - started:.0f} s ({durations})")
        assert state == "success", (tasks, airflow.logs())
        assert {t: ti["state"] for t, ti in tasks.items()} == dict.fromkeys(
            ["params", "fetch_teacher", "restore_params"], "success")
        assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
        assert not (repo / "dvc.lock").exists() and not (repo / "artifacts/teacher").exists()  # as found

        runs = pipeline_runs(env, run_id)
        (parent,) = [r for r in runs if r.data.tags.get("role") == "pipeline"]
        (stage,) = [r for r in runs if r is not parent]
        assert parent.data.tags["airflow_dag_id"] == LiveAirflow.DAG and "airflow_task_id" not in parent.data.tags
        assert stage.data.tags["mlflow.parentRunId"] == parent.info.run_id and stage.info.status == "FINISHED"
        assert stage.data.tags["airflow_task_id"] == "fetch_teacher"
        experiment = parent.data.tags["dvc_experiment"]
        assert experiments() == [experiment] and experiment.startswith("airflow-manual__")
        (ref,) = [r for r in git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").split()
                  if r.endswith(f"/{experiment}")]
        saved = yaml.safe_load(git(repo, "show", f"{ref}:dvc.lock"))["stages"]["fetch_teacher"]
        assert saved["params"]["params.yaml"]["fetch_teacher"]["random"]["seed"] == 3  # what ran

        for override, task, error in [
            ("distill.steps=-5", "params", "error: params.yaml: distill.steps: "),  # refused by params
            ("fetch_teacher.source=/no/such/teacher.pt", "fetch_teacher",  # refused by the stage
             "fetch_teacher: error: /no/such/teacher.pt"),
        ]:
            started = time.monotonic()
            bad = airflow.trigger({"overrides": [override]})
            state, tasks = airflow.wait(bad, timeout_s=120)
            took = time.monotonic() - started
            assert state == "failed" and tasks[task]["state"] == "failed", tasks
            assert tasks[task]["try_number"] == 1 and took < 60, (tasks, took)  # not retried
            (failed,) = [r for r in pipeline_runs(env, bad) if r.data.tags.get("role") == "pipeline"]
            line = failed.data.tags["error"]
            print(f"{override}: failed in {took:.0f} s: {line}")
            assert failed.info.status == "FAILED" and failed.data.tags["failed_task"] == task
            assert line.startswith(f"{task}: bad input, not retried: {error}") and "\n" not in line
            assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""
        assert tasks["restore_params"]["state"] == "success"  # after a failed stage: metrics back
        assert experiments() == [experiment]  # nothing ran with the bad overrides
    finally:
        airflow.stop()
