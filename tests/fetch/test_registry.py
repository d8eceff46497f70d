"""models:/ fetches from a real local MLflow Model Registry (sqlite store, file artifacts)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.errors import ChecksumError, FetchError
from pipeline.fetch import fetch

from .conftest import PAYLOAD, PAYLOAD_SHA


def _register(client: MlflowClient, name: str, files: dict[str, bytes], tmp: Path) -> str:
    """Log ``files`` as artifacts of a new run under ckpt/ and register them as a version."""
    src = tmp / f"src-{name}"
    src.mkdir(exist_ok=True)
    with mlflow.start_run() as run:
        for fname, data in files.items():
            (src / fname).write_bytes(data)
            mlflow.log_artifact(str(src / fname), artifact_path="ckpt")
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    # Plain files are not an MLflow model, so register_model() refuses them; a model
    # version can still point at any artifact location.
    mv = client.create_model_version(name, source=f"{run.info.artifact_uri}/ckpt",
                                     run_id=run.info.run_id)
    return mv.version


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Iterator[MlflowClient]:
    tmp = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as mp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MLFLOW_REGISTRY_URI", raising=False)
        # Explicit, not None: after an earlier test set a URI, None fell back to
        # ./mlflow.db in the working directory instead of the environment's store.
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(None)
        client = MlflowClient()
        mlflow.set_experiment(experiment_id=client.create_experiment(
            "fetch-tests", artifact_location=(tmp / "artifacts").as_uri()))
        _register(client, "teacher", {"teacher.pt": PAYLOAD}, tmp)
        client.set_registered_model_alias("teacher", "champion", "1")
        _register(client, "empty", {"notes.txt": b"no weights here"}, tmp)
        _register(client, "twins", {"a.pt": b"a", "b.safetensors": b"b", "MLmodel": b""}, tmp)
        yield client
        mlflow.set_experiment(experiment_name="Default")
        mlflow.set_tracking_uri(None)


def test_download_then_cache_hit(registry, cache_dir, cache_files):
    first = fetch("models:/teacher/1", cache_dir=cache_dir, progress=False)
    assert (first.scheme, first.source, first.from_cache) == ("models", "models:/teacher/1", False)
    assert first.sha256 == PAYLOAD_SHA and first.path.read_bytes() == PAYLOAD
    assert first.path.parent == cache_dir / "blobs" / "sha256"
    assert len(cache_files()) == 2  # blob + index entry; the downloaded tree is gone

    again = fetch("models:/teacher/1", cache_dir=cache_dir, progress=False)
    assert again.from_cache and again.path == first.path


def test_alias_resolves_to_the_cached_version(registry, cache_dir):
    fetch("models:/teacher/1", cache_dir=cache_dir, progress=False)
    for uri in ("models:/teacher@champion", "models:/teacher/champion", "models:/teacher/latest"):
        got = fetch(uri, cache_dir=cache_dir, progress=False)
        assert got.from_cache and got.sha256 == PAYLOAD_SHA and got.source == uri


def test_pinned(registry, cache_dir, cache_files):
    wrong = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(ChecksumError, match=f"expected {wrong}, got {PAYLOAD_SHA}"):
        fetch("models:/teacher/1", sha256=wrong, cache_dir=cache_dir, progress=False)
    assert cache_files() == []
    got = fetch("models:/teacher/1", sha256=PAYLOAD_SHA, cache_dir=cache_dir, progress=False)
    assert got.sha256 == PAYLOAD_SHA and not got.from_cache
    # A pin hit does not even ask the registry (a model that does not exist is fine).
    hit = fetch("models:/no-such-model/1", sha256=PAYLOAD_SHA, cache_dir=cache_dir)
    assert hit.from_cache and hit.path == got.path


@pytest.mark.parametrize("uri, expected", [
    ("models:/no-such-model/1", "no-such-model"),
    ("models:/teacher/7", "version=7"),
    ("models:/teacher@nope", "nope"),
])
def test_missing(registry, cache_dir, cache_files, uri, expected):
    with pytest.raises(FetchError) as err:
        fetch(uri, cache_dir=cache_dir, progress=False)
    message = str(err.value)
    assert message.startswith(f"{uri}: ") and expected in message and "not found" in message
    assert cache_files() == []


@pytest.mark.parametrize("name, expected", [
    ("empty", "no checkpoint file.*notes.txt"),
    ("twins", "2 checkpoint files.*MLmodel, a.pt, b.safetensors"),
])
def test_needs_exactly_one_checkpoint(registry, cache_dir, cache_files, name, expected):
    with pytest.raises(FetchError, match=expected):
        fetch(f"models:/{name}/1", cache_dir=cache_dir, progress=False)
    assert cache_files() == []


def test_malformed_uri(registry, cache_dir):
    with pytest.raises(FetchError, match="not a valid registry URI"):
        fetch("models:/teacher/1/extra", cache_dir=cache_dir)
