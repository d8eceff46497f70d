"""The DVC remote in .dvc/config: `dvc push` and `dvc pull` against an S3 API on loopback.

The remote is found exactly as in production: the bucket from .dvc/config, the endpoint
(MinIO, here moto's S3 server) and the credentials from the standard AWS environment.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess

import boto3
import pytest
import yaml

from tests.conftest import ENV_BIN, REPO, copy_repo, env_with_venv, tiny_params
from tests.fetch.test_s3 import _aws_env, moto_endpoint  # noqa: F401  (the loopback S3 server)

pytestmark = pytest.mark.slow


def remote_url() -> str:
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    default = config["core"]["remote"].strip()
    return config[f"'remote \"{default}\"'"]["url"].strip()  # section 'remote "NAME"'


def test_the_default_remote_is_an_s3_bucket_with_nothing_secret_in_the_config():
    assert remote_url().startswith("s3://")
    keys = re.findall(r"^\s*([a-z_]+)\s*=", (REPO / ".dvc" / "config").read_text(), re.M)
    assert not {"access_key_id", "secret_access_key", "session_token", "endpointurl"} & set(keys)


def run(cmd: list[str], cwd, env) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_dvc_push_then_pull_into_a_fresh_clone_restores_the_outputs(
        tmp_path, monkeypatch, moto_endpoint):  # noqa: F811
    _aws_env(monkeypatch, tmp_path, moto_endpoint)
    bucket, _, prefix = remote_url().removeprefix("s3://").partition("/")
    s3 = boto3.client("s3")  # the environment's endpoint and credentials, like dvc's
    s3.create_bucket(Bucket=bucket)

    repo = copy_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    env = env_with_venv(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run([f"{ENV_BIN}/dvc", "repro", "--single-item", "fetch_teacher"], repo, env)
    teacher = (repo / "artifacts/teacher/teacher.safetensors").read_bytes()

    pushed = run([f"{ENV_BIN}/dvc", "push", "fetch_teacher"], repo, env)
    assert "pushed" in pushed.stdout + pushed.stderr
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    assert any(k.startswith(f"{prefix}/files/md5/") for k in keys), keys

    # A colleague's machine: the same commit and dvc.lock, an empty cache, no outputs.
    shutil.rmtree(repo / "artifacts")
    shutil.rmtree(repo / ".dvc" / "cache")
    run([f"{ENV_BIN}/dvc", "pull", "fetch_teacher"], repo, env)
    assert (repo / "artifacts/teacher/teacher.safetensors").read_bytes() == teacher
    status = run([f"{ENV_BIN}/dvc", "status", "fetch_teacher"], repo, env)
    assert "up to date" in status.stdout
