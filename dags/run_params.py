"""Apply a DAG run's profile and overrides to params.yaml, and leave the workspace as the run
found it afterwards.

    python dags/run_params.py apply     # before the stages (the DAG's setup task)
    python dags/run_params.py restore   # after them, also when a stage failed (teardown)

``apply`` reads ``STYLEGAN_MOBILE_PROFILE`` (a name in ``profiles/`` or a path; empty:
none) and ``STYLEGAN_MOBILE_OVERRIDES`` (a JSON list of ``key=value``, the grammar of
``dvc exp run -S``, applied after the profile). Before touching anything it snapshots
params.yaml, dvc.lock and every ``cache: false`` output of dvc.yaml (metrics, plots; not
``persist`` ones such as distill's resumable checkpoints) into ``.dvc/tmp/airflow-base/``
(``files/`` and ``manifest.json``: which paths existed and which did not, and which cached
outputs existed), then writes the effective params.yaml, validated by the project's schema.
The stages run unchanged (``dvc repro --single-item <stage>``) and dvc.lock records what
they used. ``apply`` first puts back what an interrupted run left behind.

``restore`` depends on the kind of run:

- plain run (no profile, no overrides): the new dvc.lock and metrics are the committed
  params' results (the nightly's normal update) and stay; only files of the snapshot that
  are now missing come back (metrics/export.json after a failed export), and missing
  cached outputs are checked out from the DVC cache (``dvc checkout``). The run is also
  saved as the DVC experiment ``airflow-<run id>`` (the workspace is left as it is), so
  ``dvc exp show`` compares every nightly run.
- run with a profile or overrides: the run is recorded first as the DVC experiment
  ``airflow-<run id>`` (``dvc exp save``, the stages that ran and are up to date; the
  Airflow run id comes in ``STYLEGAN_MOBILE_RUN_ID``), the DAG run's MLflow pipeline run
  is tagged ``dvc_experiment=<name>``, then the snapshot is put back (params.yaml,
  dvc.lock, metrics, plots), outputs the run created are removed, and ``dvc checkout``
  makes the cached outputs match the restored dvc.lock. ``git status`` is then what it
  was before the run. A failed experiment save, tag or checkout is a ``warning:`` line
  and does not fail the teardown (the run's results are still in MLflow); the params are
  always put back.

Every saved experiment is pushed (``dvc exp push``) to the git remote
``$STYLEGAN_MOBILE_EXP_REMOTE`` or, by default, ``origin`` when there is one, with its
outputs when DVC has a default remote; a failed push is a ``warning:`` line.

Where a run's results live: a plain run's in the workspace (dvc.lock, metrics/, the
cached outputs: commit them), MLflow and the artifact store; an overridden run's in its
DVC experiment (``dvc exp show``, ``dvc exp apply airflow-<run id>``; its outputs are in
the DVC cache), MLflow and the artifact store, never in the workspace.

Exit status: 0, or 2 with one line naming a bad profile or override.
Run from the repository root, in the project environment (locally or in a pod).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PARAMS = Path("params.yaml")
LOCK = Path("dvc.lock")
BASE = Path(".dvc/tmp/airflow-base")  # the snapshot: files/ and manifest.json
FILES = BASE / "files"
MANIFEST = BASE / "manifest.json"
LEGACY_KEPT = Path(".dvc/tmp/params.yaml.airflow-base")  # the snapshot of earlier versions
RUN_ID_ENV = "STYLEGAN_MOBILE_RUN_ID"  # the Airflow run id (dags/nightly.py)
GROUP_ENV = "STYLEGAN_MOBILE_RUN_GROUP"  # the MLflow pipeline run's group key


def outputs(dvc_yaml: Path = Path("dvc.yaml")) -> tuple[list[str], list[str]]:
    """(``cache: false`` outputs, cached outputs) of dvc.yaml's stages; ``persist`` outputs
    (kept between runs on purpose) are in neither."""
    import yaml

    if not dvc_yaml.exists():
        return [], []
    uncached, cached = [], []
    for stage in ((yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}).values():
        for key in ("outs", "metrics", "plots"):
            for item in stage.get(key) or []:
                path, opts = next(iter(item.items())) if isinstance(item, dict) else (item, {})
                opts = opts or {}
                if opts.get("persist"):
                    continue
                (cached if opts.get("cache", True) else uncached).append(str(path))
    return uncached, cached


def snapshot(items: list[str]) -> dict:
    """Keep params.yaml, dvc.lock and the uncached outputs; write the manifest."""
    uncached, cached = outputs()
    shutil.rmtree(BASE, ignore_errors=True)
    FILES.mkdir(parents=True)
    existed, missing = [], []
    for rel in dict.fromkeys([str(PARAMS), str(LOCK), *uncached]):
        src = Path(rel)
        if not src.exists():
            missing.append(rel)
            continue
        dest = FILES / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
        existed.append(rel)
    manifest = {"run_id": os.environ.get(RUN_ID_ENV) or os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or "",
                "overrides": items, "existed": existed, "missing": missing,
                "cached_existed": [p for p in cached if Path(p).exists()],
                "cached_missing": [p for p in cached if not Path(p).exists()]}
    tmp = MANIFEST.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, MANIFEST)  # no manifest: no snapshot
    return manifest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _put_back(rel: str) -> None:
    src, dest = FILES / rel, Path(rel)
    if dest.exists() and (src.is_dir() or dest.is_dir()):
        _remove(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dest)
    else:
        tmp = dest.with_name(f".{dest.name}.airflow-restore.tmp")
        shutil.copy2(src, tmp)
        os.replace(tmp, dest)


def _warn(message: str) -> None:
    print(f"warning: {' '.join(str(message).split())}"[:2000])


def _dvc(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvc", *args], capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1", **(env or {})})


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1]


def _checkout(targets: list[str] | None = None) -> None:
    """Cached outputs as dvc.lock says (no --force: an output the cache lacks is left alone)."""
    if not Path("dvc.yaml").exists():
        return
    proc = _dvc("checkout", *(targets or []))
    if proc.returncode != 0:
        _warn(f"dvc checkout: {_last_line(proc)}")


def experiment_name(run_id: str) -> str | None:
    """``airflow-<run id>`` in the characters a DVC experiment (a git ref) may have."""
    if not run_id:
        return None
    name = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", run_id)).strip(".-")
    return f"airflow-{name}".removesuffix(".lock")


def _git_identity() -> dict[str, str]:
    """A committer for ``dvc exp save`` on a worker whose git has no user configured."""
    def config(key: str) -> str:
        try:
            return subprocess.run(["git", "config", key], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""

    env = {}
    if not (os.environ.get("GIT_AUTHOR_NAME") or config("user.name")):
        env.update(GIT_AUTHOR_NAME="stylegan-mobile airflow", GIT_COMMITTER_NAME="stylegan-mobile airflow")
    if not (os.environ.get("GIT_AUTHOR_EMAIL") or config("user.email")):
        env.update(GIT_AUTHOR_EMAIL="airflow@localhost", GIT_COMMITTER_EMAIL="airflow@localhost")
    return env


def save_experiment(manifest: dict) -> str | None:
    """Record the workspace as a DVC experiment: the stages that ran (their dvc.lock entry
    changed) and are up to date. Returns its name, or None (printed why)."""
    import yaml

    def entries(text: str) -> dict:
        return (yaml.safe_load(text) or {}).get("stages") or {}

    before = entries((FILES / LOCK).read_text()) if str(LOCK) in manifest["existed"] else {}
    after = entries(LOCK.read_text()) if LOCK.exists() else {}
    ran = [name for name, entry in after.items() if before.get(name) != entry]
    if not ran:
        print("no stage ran with these params: no DVC experiment saved")
        return None
    status = _dvc("status", "--json")
    if status.returncode != 0:
        _warn(f"dvc status: {_last_line(status)}; no DVC experiment saved")
        return None
    changed = json.loads(status.stdout or "{}")
    stages = [name for name in ran if name not in changed]
    if not stages:
        print("no stage that ran is up to date: no DVC experiment saved")
        return None
    name = experiment_name(manifest["run_id"])
    args = ["exp", "save", "--force", *(["--name", name] if name else []), *stages]
    proc = _dvc(*args, env=_git_identity())
    if proc.returncode != 0:
        _warn(f"dvc exp save: {_last_line(proc)}")
        return None
    saved = re.search(r"saved as: (\S+)", proc.stdout + proc.stderr)
    name = saved[1] if saved else name
    print(f"DVC experiment {name}: {', '.join(stages)} (dvc exp show; dvc exp apply {name})")
    return name


def tag_pipeline_run(experiment: str) -> None:
    """Tag the DAG run's MLflow pipeline run ``dvc_experiment=<name>``."""
    group = os.environ.get(GROUP_ENV)
    if not group:
        return
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        from pipeline import tracking

        if tracking.tracking_off():
            return
        import mlflow

        experiment_id = tracking.setup(root=".")
        client = mlflow.MlflowClient()
        run_id = tracking.find_pipeline_run(client, experiment_id, group)
        if run_id is None:
            _warn(f"no MLflow pipeline run {group} to tag with dvc_experiment={experiment}")
            return
        client.set_tag(run_id, "dvc_experiment", experiment)
    except Exception as e:  # the tag is a convenience: the teardown goes on
        from pipeline.redaction import scrub_secrets

        _warn(scrub_secrets(f"could not tag the MLflow pipeline run with dvc_experiment={experiment}: {e}"))


def push_experiment(name: str) -> None:
    """``dvc exp push`` to the git remote ``$STYLEGAN_MOBILE_EXP_REMOTE`` (default: origin,
    when the repository has it), with the outputs when DVC has a default remote."""
    remote = os.environ.get("STYLEGAN_MOBILE_EXP_REMOTE", "").strip()
    if not remote:
        try:
            remotes = subprocess.run(["git", "remote"], capture_output=True, text=True).stdout.split()
        except OSError:
            remotes = []
        if "origin" not in remotes:
            return  # nowhere to share it: dvc exp show lists it here
        remote = "origin"
    has_storage = bool(_dvc("config", "core.remote").stdout.strip())
    proc = _dvc("exp", "push", *([] if has_storage else ["--no-cache"]), remote, name,
                env=_git_identity())
    if proc.returncode != 0:
        _warn(f"dvc exp push {remote} {name}: {_last_line(proc)}")
    else:
        print(f"pushed DVC experiment {name} to {remote}"
              + ("" if has_storage else " (no DVC remote: its outputs stay in this cache)"))


def _record(manifest: dict) -> str | None:
    """The run as a DVC experiment: saved, named on its MLflow pipeline run, shared."""
    try:
        experiment = save_experiment(manifest)
    except Exception as e:
        _warn(f"dvc exp save: {e}")
        return None
    if experiment:
        tag_pipeline_run(experiment)
        push_experiment(experiment)
    return experiment


def restore(record: bool = True) -> str | None:
    """Leave the workspace as the run found it (see the module docstring); None when there
    was no snapshot. ``record``: save an overridden run as a DVC experiment first."""
    if not MANIFEST.exists():
        shutil.rmtree(BASE, ignore_errors=True)
        if LEGACY_KEPT.exists():
            os.replace(LEGACY_KEPT, PARAMS)
            return "put back params.yaml (kept by an earlier version of this script)"
        return None
    manifest = json.loads(MANIFEST.read_text())
    if not manifest["overrides"]:  # plain run: keep its results, put back what is missing
        back = [rel for rel in manifest["existed"] if not Path(rel).exists()]
        for rel in back:
            _put_back(rel)
        missing = [p for p in manifest["cached_existed"] if not Path(p).exists()]
        if missing:
            _checkout(missing)
        experiment = _record(manifest) if record else None  # the workspace stays as it is
        shutil.rmtree(BASE, ignore_errors=True)
        return ("kept the run's dvc.lock and metrics"
                + (f"; put back {', '.join(back + missing)}" if back or missing else "")
                + (f"; the run is also DVC experiment {experiment}" if experiment else ""))
    experiment = None
    try:
        if record:
            experiment = _record(manifest)
    finally:  # whatever happened above; params.yaml first
        for rel in sorted(manifest["existed"], key=lambda rel: rel != str(PARAMS)):
            _put_back(rel)
        for rel in manifest["missing"] + manifest["cached_missing"]:
            _remove(Path(rel))
    _checkout()
    shutil.rmtree(BASE, ignore_errors=True)
    return ("put back params.yaml, dvc.lock and metrics as the run found them"
            + (f"; the run is DVC experiment {experiment}" if experiment else ""))


def apply(profile: str, overrides: list[str]) -> list[str]:
    """Snapshot the workspace, then write params.yaml = committed + profile + overrides;
    returns the applied overrides."""
    if restore(record=False):
        print("restored the workspace an interrupted run left behind")
    items: list[str] = []
    if profile or overrides:
        sys.path.insert(0, str(Path.cwd()))
        from pipeline.params import profile_overrides

        if profile:
            # ++: set the key whether or not the committed file has it (a profile may add budgets)
            items = [f"++{key}={_yaml_scalar(value)}"
                     for key, value in profile_overrides(profile, PARAMS).items()]
        items += overrides
    snapshot(items)
    if not items:
        return []
    try:
        from dvc.utils.hydra import apply_overrides

        from pipeline.params import load_params

        apply_overrides(PARAMS, items)
        load_params(PARAMS)
    except BaseException:
        _put_back(str(PARAMS))
        shutil.rmtree(BASE, ignore_errors=True)  # the teardown does not run after a failed setup
        raise
    return items


def _yaml_scalar(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def main(argv: list[str]) -> int:
    if argv not in (["apply"], ["restore"]):
        print("usage: python dags/run_params.py apply|restore", file=sys.stderr)
        return 2
    if argv == ["restore"]:
        print(restore() or "workspace unchanged (nothing to restore)")
        return 0
    profile = os.environ.get("STYLEGAN_MOBILE_PROFILE", "").strip()
    try:
        overrides = json.loads(os.environ.get("STYLEGAN_MOBILE_OVERRIDES") or "[]")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError("must be a JSON list of strings")
    except ValueError as e:
        print(f"error: STYLEGAN_MOBILE_OVERRIDES: {e}", file=sys.stderr)
        return 2
    try:
        applied = apply(profile, overrides)
    except Exception as e:  # ParamsError, DVC's InvalidArgumentError: bad input
        message = f"{e} ({e.__cause__})" if e.__cause__ else str(e)
        print(f"error: {' '.join(message.split())}"[:2000], file=sys.stderr)
        return 2
    print("params.yaml as committed" if not applied else
          f"params.yaml with profile={profile or '-'}: " + " ".join(applied))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
