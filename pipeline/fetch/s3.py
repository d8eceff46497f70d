"""s3://bucket/key downloads with boto3 (AWS S3, MinIO, or any S3 API).

Endpoint, region and credentials come from the standard AWS environment and profile
(AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_PROFILE, ...),
so pointing at MinIO or a local test server needs no code change.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.errors import FetchError
from pipeline.fetch.common import CHUNK, Transient, redact_uri, stream_to_file, with_retries

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                    "InvalidToken", "TokenRefreshRequired"}


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key). The key is taken verbatim (it may hold '?' or '#')."""
    bucket, _, key = uri[len("s3://"):].partition("/")
    if not bucket or not key:
        raise FetchError(f"{redact_uri(uri)}: not a valid S3 URI; expected s3://bucket/key.")
    return bucket, key


def _client(timeout_s: float, retries: int) -> Any:
    import boto3  # imported here: boto3 is slow to import and only S3 sources need it
    from botocore.config import Config

    # A fresh session per fetch reads the current environment/profile (credentials rotate
    # in long-running workers); botocore retries the request itself on throttling, 5xx and
    # connection errors.
    config = Config(connect_timeout=timeout_s, read_timeout=timeout_s,
                    retries={"mode": "standard", "total_max_attempts": max(0, retries) + 1})
    return boto3.session.Session().client("s3", config=config)


def _client_error(e: Any, source: str, bucket: str, key: str, endpoint: str) -> FetchError:
    err = e.response.get("Error", {})
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    code = str(err.get("Code") or status)
    where = f"(endpoint {endpoint})"
    if code == "NoSuchBucket":
        what = f"bucket {bucket!r} does not exist {where}; check the bucket name and endpoint."
    elif code in _NOT_FOUND:
        what = f"object {key!r} not found in bucket {bucket!r} {where}; check the key."
    elif code in _DENIED:
        what = (f"access denied ({code}) {where}; the credentials in use may not read "
                f"s3://{bucket}/{key}: grant s3:GetObject or use other credentials.")
    elif code in _BAD_CREDENTIALS:
        what = (f"the S3 credentials were rejected ({code}) {where}; check "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE.")
    else:
        what = f"S3 error {code}: {err.get('Message', '')} {where}".rstrip() + "."
    return FetchError(f"{source}: {what}")


def download(uri: str, workdir: Path, *, source: str, timeout_s: float, retries: int,
             backoff_s: float, progress: bool) -> tuple[Path, str, int]:
    """Download ``uri`` to a file in ``workdir``; return (file, sha256, size)."""
    from botocore import exceptions as bx

    bucket, key = parse_s3_uri(uri)
    client = _client(timeout_s, retries)
    endpoint = redact_uri(client.meta.endpoint_url)
    dest = workdir / "download"

    def attempt() -> tuple[str, int]:
        try:
            obj = client.get_object(Bucket=bucket, Key=key)
        except bx.ClientError as e:
            raise _client_error(e, source, bucket, key, endpoint) from None
        except (bx.NoCredentialsError, bx.PartialCredentialsError):
            raise FetchError(
                f"{source}: no usable AWS credentials found; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, for the S3 endpoint."
            ) from None
        except (bx.EndpointConnectionError, bx.ConnectTimeoutError, bx.ReadTimeoutError,
                bx.ConnectionClosedError) as e:
            raise FetchError(
                f"{source}: cannot reach the S3 endpoint {endpoint} ({type(e).__name__}); check "
                "AWS_ENDPOINT_URL / AWS_REGION and that the server is up."
            ) from None
        total = obj.get("ContentLength")
        body = obj["Body"]
        try:
            digest, size = stream_to_file(body.iter_chunks(CHUNK), dest, total=total,
                                          desc=PurePosixPath(key).name, progress=progress)
        except (bx.IncompleteReadError, bx.ReadTimeoutError, bx.ResponseStreamingError,
                bx.ConnectionClosedError) as e:
            raise Transient(f"download interrupted ({type(e).__name__})") from None
        finally:
            body.close()
        if total is not None and size != total:
            raise Transient(f"truncated body: got {size} of {total} bytes")
        return digest, size

    digest, size = with_retries(attempt, source=source, retries=retries, backoff_s=backoff_s)
    return dest, digest, size
