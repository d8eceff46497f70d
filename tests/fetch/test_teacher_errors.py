"""A fetched file that is no usable teacher: the error names the source the user gave (redacted),
not the cache blob it was downloaded to."""

from __future__ import annotations

import random

import pytest

from pipeline.checkpoints.rosinality import save_rosinality
from pipeline.errors import CheckpointError
from pipeline.params import parse_params
from pipeline.stages.fetch_teacher import obtain_teacher
from tests.conftest import tiny_params


@pytest.mark.parametrize("case, problem, advice", [
    ("html", "unknown checkpoint format", "check that the source is the checkpoint file itself"),
    ("random_bytes", "unknown checkpoint format", "check that the source is the checkpoint file itself"),
    ("wrong_format", "fetch_teacher.format is 'nvidia' but the file looks like a rosinality",
     "set fetch_teacher.format: rosinality or auto"),
])
def test_unusable_download_is_named_by_its_url(http_server, cache_dir, cache_files, tmp_path, request,
                                               case, problem, advice):
    overrides = {}
    if case == "html":
        body = b"<!doctype html><html><body>Sign in to continue</body></html>"
    elif case == "random_bytes":
        body = b"\x00" + random.Random(0).randbytes(4095)  # not even a pickle's first byte
    else:
        save_rosinality(request.getfixturevalue("tiny_teacher"), tmp_path / "teacher.pt")
        body, overrides = (tmp_path / "teacher.pt").read_bytes(), {"format": "nvidia"}
    http_server.files["teacher.pt"] = body
    url = http_server.url("/files/teacher.pt")
    cfg = parse_params(tiny_params(f"{url}?v=2", **overrides)).fetch_teacher  # queries are not logged
    with pytest.raises(CheckpointError) as err:
        obtain_teacher(cfg, cache_dir, progress=False)
    message = str(err.value)
    assert message.startswith(f"{url}: {problem}") and message.endswith(advice)
    assert "blobs" not in message and str(cache_dir) not in message and "v=2" not in message
    assert cache_files() == []  # the unusable blob is evicted
