"""Shared fixtures: tiny teachers, an isolated MLflow store, a scratch copy of the repo."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.models.stylegan2 import StyleGAN2Config, random_generator
from pipeline.params import Regression, deep_merge

REPO = Path(__file__).resolve().parents[1]
ENV_BIN = str(Path(sys.executable).parent)

# A teacher small enough for every test: 32x32, 32 channels, 2 mapping layers.
TINY = dict(resolution=32, channel_multiplier=1, channel_max=32, style_dim=32, n_mlp=2)


# What a test run may leave in the repository: Python's and the tools' own caches; and
# the environment `make setup` built, which the tests use but do not write.
RUN_CACHES = ("__pycache__/", ".pytest_cache/", ".ruff_cache/")
ENVIRONMENT = ("!! .venv/", "!! .tools/", "!! stylegan_mobile.egg-info/")


def _workspace_state() -> set[str]:
    """``git status`` of the repository, ignored paths included, and every file (with its
    mtime) under the ignored folders that already exist: a test writing into an existing
    ``mlruns/`` or ``artifacts/`` changes the state as much as one that creates it."""
    out = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    state = {line for line in out.splitlines() if not line.endswith(RUN_CACHES)}
    for line in sorted(state):
        if line.startswith("!! ") and line.endswith("/") and line not in ENVIRONMENT:
            state |= {f"{path.relative_to(REPO)} @{path.stat().st_mtime_ns}"
                      for path in (REPO / line[3:]).rglob("*")
                      if path.is_file() and "__pycache__" not in path.parts}
    return state


def pytest_sessionstart(session):
    """The repository's state before any test runs: once per run, in the process that runs
    them all or, with pytest-xdist, in the controller (a worker finishing early must not
    see another's test at work)."""
    if not hasattr(session.config, "workerinput"):
        session.config.stash[_REPO_STATE] = _workspace_state()


def pytest_sessionfinish(session, exitstatus):
    """Every test writes under its temporary folders only: the run fails at its end if the
    repository gained or changed any path."""
    before = session.config.stash.get(_REPO_STATE, None)
    if before is None:
        return
    left = sorted(_workspace_state() - before)
    if left:
        session.config.get_terminal_writer().line(
            f"FAILED: the test run wrote into the repository: {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_REPO_STATE = pytest.StashKey[set]()


# The longest files, longest first (seconds beside another worker on 2 cores). With
# ``--dist loadfile --no-loadscope-reorder`` (the Makefile) pytest-xdist hands files out in
# collection order, one to each worker, then a second to a worker whose first has at most 2
# tests pending: a short file sits third so that the 256 run's worker queues it rather than
# the 1024 run, which goes behind the orchestration file on the other worker.
FIRST = ("test_shape_256.py",  # ~500 s, 1 test
         "test_orchestration.py",  # ~430 s, 3 tests
         "test_headline.py",  # seconds, 6 tests
         "test_shape_1024.py")  # ~230 s, 1 test


def pytest_collection_modifyitems(config, items):
    """The files of :data:`FIRST` first, then the other files with end-to-end (``slow``)
    tests, then the rest, in collection order otherwise, so the long ones start at once and
    the short ones fill the workers around them."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}

    def rank(item) -> tuple[int, int]:
        first = FIRST.index(item.path.name) if item.path.name in FIRST else len(FIRST)
        return first, item.path not in slow_files

    items.sort(key=rank)  # stable: files stay together


@pytest.fixture(scope="session", autouse=True)
def _session_stores(tmp_path_factory):
    """MLflow defaults to a store of the session's (a test that forgets its own store must
    not write ./mlflow.db), measurements to a store of the session's (not ~/.cache)."""
    store = tmp_path_factory.mktemp("default-mlflow")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
        # the session's measurement store (pipeline.bench.measurements), not the user's
        mp.setenv("STYLEGAN_MOBILE_MEASUREMENTS", str(tmp_path_factory.mktemp("measurements")))
        mp.delenv("STYLEGAN_MOBILE_RUN_GROUP", raising=False)
        yield


@pytest.fixture(autouse=True)
def _mlflow_store_restored():
    """``mlflow.set_tracking_uri`` writes MLFLOW_TRACKING_URI into ``os.environ`` (and ``None``
    deletes it), beyond monkeypatch's reach: after each test, back to the session's store."""
    saved = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    import mlflow

    mlflow.set_tracking_uri(None)  # MLflow follows the environment again
    if saved is not None:
        os.environ["MLFLOW_TRACKING_URI"] = saved


def thread_share() -> int:
    """The cores shared out between pytest-xdist's workers (make test: one per core)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    return max(1, min(2, (os.cpu_count() or 1) // workers))


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(thread_share())


@pytest.fixture
def tiny_cfg() -> StyleGAN2Config:
    return StyleGAN2Config.config_f(**TINY)


@pytest.fixture
def tiny_teacher(tiny_cfg):
    return random_generator(tiny_cfg, seed=1)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A real MLflow tracking store (SQLite + local artifacts) private to the test."""
    uri = f"sqlite:///{tmp_path / 'mlflow' / 'mlflow.db'}"
    (tmp_path / "mlflow").mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.set_tracking_uri(uri)  # overrides the env: an earlier test may have set another
    monkeypatch.delenv("STYLEGAN_MOBILE_RUN_GROUP", raising=False)
    return uri


def with_overrides(cfg: dict, overrides: dict, replace: tuple[str, ...] = ()) -> dict:
    """A section's tiny settings with ``overrides``: dicts merge one level deep, except the
    keys in ``replace`` (and non-dicts), which replace."""
    for key, value in overrides.items():
        if isinstance(value, dict) and key not in replace:
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return cfg


def tiny_metric_networks(**overrides) -> dict:
    """Stand-in LPIPS and Inception (no weights offline), LPIPS at the tiny images' size."""
    stand_in = {"weights": None, "sha256": None, "stand_in": True}
    cfg = {"lpips_vgg": dict(stand_in), "lpips_alex": dict(stand_in),
           "inception": dict(stand_in), "lpips_size": 32}
    return with_overrides(cfg, overrides)


def tiny_distill(**overrides) -> dict:
    """A few-second distillation on the tiny teacher (stand-in LPIPS/Inception weights)."""
    cfg = {
        "steps": 8, "batch_size": 2, "ema_decay": 0.5, "style_mixing_prob": 0.5,
        "loss": {"multiscale_perceptual": 0.5, "gan": 0.1},
        "lpips": "alex",
        "adversarial": {"channel_max": 16, "r1_every": 4},
        # An 8-step student overshoots a peak now and then: reported, not judged here
        # (the gate's own test, tests/stages/test_distill_stage.py, sets it).
        "validation": {"every": 4, "num_samples": 4, "grid_samples": 2, "max_exploded": None},
        "checkpoint_every": 2, "log_every": 2,
    }
    return with_overrides(cfg, overrides)


def tiny_search(**overrides) -> dict:
    """A seconds-long search on a tiny student (stand-in LPIPS)."""
    cfg = {
        "budgets": {"half": 0.5}, "ratios": [0.25, 0.5, 0.75, 1.0], "num_samples": 4,
        "batch_size": 4, "lpips": "alex",
        "evolution": {"population": 6, "generations": 3},
    }
    return with_overrides(cfg, overrides, replace=("budgets",))


def tiny_export() -> dict:
    """ONNX and ExecuTorch of the W+ variant only (Core ML and fp16 have their own tests);
    int8 ONNX only (seconds; int8 ExecuTorch's lowering has its own test)."""
    return {"formats": ["onnx", "pte"], "inputs": ["wplus"], "fp16": False,
            "parity": {"samples": 2}, "lpips": "alex",
            "int8": {"formats": ["onnx"], "calibration_samples": 4, "eval_samples": 2, "repeats": 2,
                     "seconds": 0},
            "registry": {"name": "tiny-student"}, "workers": 1}


def tiny_evaluate(**overrides) -> dict:
    """A seconds-long evaluation: 8 samples, stand-in Inception/LPIPS, PyTorch latency only."""
    cfg = {"num_samples": 8, "batch_size": 8, "low_sample_fid": "warn", "grid_samples": 2,
           "kid_subsets": 5, "reference": {"num_samples": 8},
           "lpips": "alex",
           "latency": {"runtimes": ["pytorch"], "batch_sizes": [1], "warmup": 1, "repeats": 2,
                       "seconds": 0, "threads": 1, "workers": 1, "ratio_1024": False},
           # dvc.yaml has the export stage depend on this subsection: DVC needs it spelled out
           "regression": Regression().model_dump()}
    return with_overrides(cfg, overrides)


def tiny_params(source: str = "random:", **fetch_overrides) -> dict:
    """params.yaml content for a few-second pipeline run."""
    fetch = {
        "source": source,
        "random": {**{k: v for k, v in TINY.items()}, "seed": 0},
        "download": {"timeout_s": 10, "retries": 1, "backoff_s": 0.01},
        "samples": {"count": 4, "seed": 0, "truncation_psi": 0.7, "nrow": 2},
        **fetch_overrides,
    }
    return {"profile": "test-tiny", "metric_networks": tiny_metric_networks(),
            "fetch_teacher": fetch, "distill": tiny_distill(),
            "search": tiny_search(), "evaluate": tiny_evaluate(), "export": tiny_export()}


def run_stage(name: str, params: dict, cache_dir: Path, **paths):
    """A stage's ``run`` in this process (no MLflow), on ``params`` (params.yaml content)."""
    from pipeline import stages
    from pipeline.params import parse_params

    stage = stages.load(name)
    return stage.run(parse_params(params), stage.Paths(**{k: str(v) for k, v in paths.items()}),
                     stages.Context(Path(cache_dir), progress=False))


def shape_params(profile: str) -> dict:
    """params.yaml with a profile (``profiles/<profile>.yaml``) applied, as ``make repro
    PROFILE=...`` would."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())
    return deep_merge(base, yaml.safe_load((REPO / "profiles" / f"{profile}.yaml").read_text()))


def copy_repo(dest: Path) -> Path:
    """Copy the repository's files (tracked and not ignored) into ``dest`` as a fresh git repo."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    return dest


def env_with_venv(**extra: str) -> dict[str, str]:
    """The environment of a pipeline subprocess: the venv's tools first, and the worker's
    share of the cores (a stage beside another worker's must not spin on four threads)."""
    return {**os.environ, "PATH": f"{ENV_BIN}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
            "OMP_NUM_THREADS": str(thread_share()), **extra}


class FullFile(io.FileIO):
    """A real file that takes ``room`` bytes, then answers ENOSPC, as a full filesystem
    answers ``write(2)``. Tests put :func:`full_disk_open` in place of a module's ``open``."""

    room = 64

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            super().write(bytes(data)[: max(0, self.room - self.tell())])
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def full_disk_open(path, mode="r", *args, **kwargs):
    if "w" in mode and "b" in mode:
        return FullFile(path, "w")
    return builtins.open(path, mode, *args, **kwargs)


def free_port() -> int:
    """A loopback port nothing listens on (the OS's pick; free until someone binds it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connections are refused."""
    return free_port()


class MlflowServer:
    """A real ``mlflow server`` on a loopback port (SQLite runs, artifacts proxied to a
    folder) that a test can stop and start again on the same port and store."""

    def __init__(self, folder: Path, wait_s: float = 60) -> None:
        self.folder, self.wait_s = folder, wait_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> str:
        import requests

        log = (self.folder / "mlflow-server.log").open("a")
        self.process = subprocess.Popen(
            [f"{ENV_BIN}/mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
             "--artifacts-destination", str(self.folder / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.wait_s
        while True:
            assert self.process.poll() is None, (self.folder / "mlflow-server.log").read_text()[-3000:]
            try:
                if requests.get(f"{self.url}/health", timeout=2).ok:
                    return self.url
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow server did not come up"
            time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and its uvicorn workers
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None
