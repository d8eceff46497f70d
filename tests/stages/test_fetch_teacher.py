"""The fetch_teacher stage: outputs, MLflow logging, and bad input that leaves nothing behind."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading

import mlflow
import pytest
import torch
import yaml

from components.fetch_teacher import main
from pipeline.checkpoints import load_teacher
from pipeline.checkpoints.rosinality import save_rosinality
from tests.conftest import tiny_params


@pytest.fixture
def workdir(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(path, data):
    path.write_text(yaml.safe_dump(data))
    return str(path)


def run_stage(workdir, params: dict) -> int:
    return main(["--params", write_params(workdir / "params.yaml", params), "--out",
                 str(workdir / "artifacts/teacher"), "--metrics", str(workdir / "metrics/f.json"),
                 "--cache-dir", str(workdir / "cache"), "--no-progress"])


def stage_runs():
    return mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list")


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on loopback serving a folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_random_teacher_writes_checkpoint_metadata_grid_metrics_and_mlflow_run(workdir):
    assert run_stage(workdir, tiny_params()) == 0
    out = workdir / "artifacts/teacher"
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "samples.png",
                                                     "teacher.safetensors"]
    metrics = json.loads((workdir / "metrics/f.json").read_text())
    assert metrics["resolution"] == 32 and metrics["random_weights"] == 1
    assert metrics["params"] == metrics["params_mapping"] + metrics["params_synthesis"] > 0
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["random_weights"] is True and meta["format"] == "random"
    assert meta["architecture"]["resolution"] == 32
    teacher = load_teacher(out / "teacher.safetensors")
    assert teacher.format == "project" and teacher.generator.cfg.resolution == 32

    (run,) = stage_runs()
    assert run.data.tags["stage"] == "fetch_teacher"
    assert run.data.tags["stand_in_weights"] == "true"
    assert run.data.params["random.resolution"] == "32"
    assert run.data.metrics["params"] == metrics["params"]
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "teacher")}
    assert artifacts == {"teacher/metadata.json", "teacher/samples.png"}


def test_downloaded_rosinality_teacher_is_verified_cached_and_normalised(
    workdir, http_dir, tiny_teacher
):
    root, base = http_dir
    save_rosinality(tiny_teacher, root / "teacher.pt")
    digest = hashlib.sha256((root / "teacher.pt").read_bytes()).hexdigest()
    params = tiny_params(f"{base}/teacher.pt", sha256=digest)
    assert run_stage(workdir, params) == 0
    meta = json.loads((workdir / "artifacts/teacher/metadata.json").read_text())
    assert meta["format"] == "rosinality" and meta["source_sha256"] == digest
    assert meta["random_weights"] is False and meta["from_cache"] is False
    out = load_teacher(workdir / "artifacts/teacher/teacher.safetensors").generator
    z = torch.randn(2, 32)
    assert torch.equal(out(z, noise_mode="const").image, tiny_teacher(z, noise_mode="const").image)

    (root / "teacher.pt").unlink()  # a second run must not need the server's file
    assert run_stage(workdir, params) == 0
    assert json.loads((workdir / "artifacts/teacher/metadata.json").read_text())["from_cache"]
    tags = [r.data.tags for r in stage_runs()]
    assert all(t["stand_in_weights"] == "false" and t["teacher.sha256"] == digest for t in tags)


def _assert_nothing_written(workdir, before: set[str]):
    assert not (workdir / "metrics/f.json").exists()
    assert {p.name for p in (workdir / "artifacts/teacher").iterdir()} == before
    blobs = workdir / "cache" / "blobs"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


@pytest.mark.parametrize("case", ["wrong_sha256", "code_in_pickle", "not_a_checkpoint", "http_404"])
def test_bad_sources_fail_with_a_clear_error_and_leave_previous_output_intact(
    workdir, http_dir, tiny_teacher, case, capsys
):
    root, base = http_dir
    marker = workdir / "PWNED"
    prior = workdir / "artifacts/teacher"
    prior.mkdir(parents=True)
    (prior / "previous-run.txt").write_text("keep me")
    if case == "wrong_sha256":
        save_rosinality(tiny_teacher, root / "t.pt")
        params, expect = tiny_params(f"{base}/t.pt", sha256="0" * 64), "sha256"
    elif case == "code_in_pickle":
        (root / "t.pkl").write_bytes(
            b"\x80\x04cos\nsystem\n(V" + f"touch {marker}".encode() + b"\ntR.")
        params, expect = tiny_params(f"{base}/t.pkl"), "os.system"
    elif case == "not_a_checkpoint":
        (root / "t.pt").write_bytes(b"<html>login required</html>")
        params, expect = tiny_params(f"{base}/t.pt"), "unknown checkpoint format"
    else:
        params, expect = tiny_params(f"{base}/absent.pt"), "404"
    assert run_stage(workdir, params) == 2
    err = capsys.readouterr().err
    assert "fetch_teacher: error:" in err and expect in err
    assert not marker.exists()
    _assert_nothing_written(workdir, {"previous-run.txt"})
    (run,) = stage_runs()
    assert run.info.status == "FAILED" and expect in run.data.tags["error"]


def test_invalid_params_fail_before_any_work_and_create_no_run(workdir, capsys):
    params = tiny_params()
    params["fetch_teacher"]["random"]["resolution"] = 100
    assert run_stage(workdir, params) == 2
    err = capsys.readouterr().err
    assert "fetch_teacher.random.resolution: must be a power of two" in err
    assert not (workdir / "artifacts").exists() and not (workdir / "metrics").exists()
    assert not os.path.exists(workdir / "mlflow" / "artifacts")


def test_a_source_with_credentials_is_refused_before_anything_records_it(workdir, capsys):
    """Credentials in the URL would land in dvc.lock, DVC's run cache and MLflow params:
    the stage refuses them (exit 2, one line, no secret in it) before any run exists."""
    params = tiny_params("https://reader:hunter2@127.0.0.1:9/teacher.pt?token=XYZ-secret")
    assert run_stage(workdir, params) == 2
    err = capsys.readouterr().err
    assert "fetch_teacher.source: holds a credential (user:password@ in the URL)" in err
    assert "hunter2" not in err and "XYZ-secret" not in err and len(err.splitlines()) == 1
    assert stage_runs() == [] and not (workdir / "artifacts").exists()
