"""s3:// fetches against moto's threaded S3 server on 127.0.0.1, reached over real HTTP.

boto3 finds the server only through the standard AWS environment variables, exactly
as production code finds AWS S3 or MinIO.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer

from pipeline.errors import ChecksumError, FetchError
from pipeline.fetch import fetch

from .conftest import PAYLOAD, PAYLOAD_SHA

BUCKET = "teachers"
FAST = {"retries": 1, "backoff_s": 0.001, "timeout_s": 5.0, "progress": False}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="ffhq/teacher.pt", Body=PAYLOAD)
    s3.put_object(Bucket=BUCKET, Key="secret/teacher.pt", Body=PAYLOAD)
    yield endpoint
    server.stop()


def _aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path, endpoint: str,
             key: str | None = "testing", secret: str | None = "testing") -> None:
    """Point the standard AWS environment at ``endpoint``, isolated from the host's profile."""
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_REGION",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    if key is not None and secret is not None:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)


@pytest.fixture
def aws_env(monkeypatch, tmp_path, moto_endpoint) -> str:
    _aws_env(monkeypatch, tmp_path, moto_endpoint)
    return moto_endpoint


def test_download_then_cache_hit(aws_env, cache_dir, cache_files):
    uri = f"s3://{BUCKET}/ffhq/teacher.pt"
    first = fetch(uri, sha256=PAYLOAD_SHA, cache_dir=cache_dir, **FAST)
    assert (first.scheme, first.source, first.from_cache) == ("s3", uri, False)
    assert first.sha256 == PAYLOAD_SHA and first.size == len(PAYLOAD)
    assert first.path.read_bytes() == PAYLOAD
    assert len(cache_files()) == 2  # blob + index entry

    # The object changes on the server: an unpinned re-fetch is served from the index.
    boto3.client("s3").put_object(Bucket=BUCKET, Key="ffhq/teacher.pt", Body=b"changed")
    try:
        second = fetch(uri, cache_dir=cache_dir, **FAST)
    finally:
        boto3.client("s3").put_object(Bucket=BUCKET, Key="ffhq/teacher.pt", Body=PAYLOAD)
    assert second.from_cache and second.path == first.path and second.sha256 == PAYLOAD_SHA


@pytest.mark.parametrize("uri, expected", [
    (f"s3://{BUCKET}/ffhq/missing.pt", "object 'ffhq/missing.pt' not found in bucket 'teachers'"),
    ("s3://no-such-bucket/teacher.pt", "bucket 'no-such-bucket' does not exist"),
])
def test_not_found(aws_env, cache_dir, cache_files, uri, expected):
    with pytest.raises(FetchError) as err:
        fetch(uri, cache_dir=cache_dir, **FAST)
    assert str(err.value).startswith(f"{uri}: {expected}")
    assert aws_env in str(err.value)  # names the endpoint it asked
    assert cache_files() == []


def test_wrong_pin(aws_env, cache_dir, cache_files):
    wrong = hashlib.sha256(b"not the teacher").hexdigest()
    with pytest.raises(ChecksumError, match=f"expected {wrong}, got {PAYLOAD_SHA}"):
        fetch(f"s3://{BUCKET}/ffhq/teacher.pt", sha256=wrong, cache_dir=cache_dir, **FAST)
    assert cache_files() == []


def test_missing_credentials(monkeypatch, tmp_path, moto_endpoint, cache_dir, cache_files):
    _aws_env(monkeypatch, tmp_path, moto_endpoint, key=None, secret=None)
    with pytest.raises(FetchError, match="no usable AWS credentials"):
        fetch(f"s3://{BUCKET}/ffhq/teacher.pt", cache_dir=cache_dir, **FAST)
    assert cache_files() == []


def test_unreachable_endpoint(monkeypatch, tmp_path, closed_port, cache_dir, cache_files):
    endpoint = f"http://127.0.0.1:{closed_port}"
    _aws_env(monkeypatch, tmp_path, endpoint)
    with pytest.raises(FetchError, match=f"cannot reach the S3 endpoint {endpoint}"):
        fetch(f"s3://{BUCKET}/ffhq/teacher.pt", cache_dir=cache_dir, **{**FAST, "retries": 0})
    assert cache_files() == []


def test_invalid_uri(aws_env, cache_dir):
    with pytest.raises(FetchError, match="expected s3://bucket/key"):
        fetch(f"s3://{BUCKET}", cache_dir=cache_dir, **FAST)


@pytest.fixture
def iam_enforced(aws_env) -> Iterator[tuple[str, str]]:
    """An IAM user allowed s3:* except GetObject under secret/, with moto's IAM checks on.

    Turned on through moto's server-mode endpoint /moto-api/reset-auth (what
    moto.core.set_initial_no_auth_action_count uses in server mode): from then on, every
    request is signature-checked against IAM and its policies are evaluated.
    """
    iam = boto3.client("iam")
    user = iam.create_user(UserName="distiller")["User"]["UserName"]
    iam.put_user_policy(UserName=user, PolicyName="no-secret", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{BUCKET}/secret/*"},
        ],
    }))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    reset = f"{aws_env}/moto-api/reset-auth"
    requests.post(reset, data=b"0", timeout=5).raise_for_status()
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        requests.post(reset, data=b"inf", timeout=5).raise_for_status()
        iam.delete_user_policy(UserName=user, PolicyName="no-secret")
        iam.delete_access_key(UserName=user, AccessKeyId=key["AccessKeyId"])
        iam.delete_user(UserName=user)


def test_access_denied_and_bad_credentials(iam_enforced, monkeypatch, cache_dir, cache_files):
    key_id, secret = iam_enforced
    # Unknown to IAM: the fixture's dummy "testing" key is now rejected.
    with pytest.raises(FetchError, match=r"credentials were rejected \(InvalidAccessKeyId\)"):
        fetch(f"s3://{BUCKET}/ffhq/teacher.pt", cache_dir=cache_dir, **FAST)

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    # The policy lets this user read ffhq/ ...
    got = fetch(f"s3://{BUCKET}/ffhq/teacher.pt", cache_dir=cache_dir, **FAST)
    assert got.sha256 == PAYLOAD_SHA
    # ... but denies s3:GetObject under secret/.
    uri = f"s3://{BUCKET}/secret/teacher.pt"
    with pytest.raises(FetchError) as err:
        fetch(uri, cache_dir=cache_dir, **FAST)
    assert str(err.value).startswith(f"{uri}: access denied (AccessDenied)")
    assert "s3:GetObject" in str(err.value)
    assert len(cache_files()) == 2  # only the allowed download
