"""Identical inputs give byte-identical files, so DVC, resume and caches see no change
where there is none: the project's safetensors files, distill snapshots and every export
format (issue: the same teacher fetched twice got another sha256 and restarted training)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from pipeline.checkpoints import save_teacher
from pipeline.checkpoints.project import save_student
from pipeline.export import formats
from pipeline.export.graph import build
from pipeline.io import sha256_file
from pipeline.training.checkpoint import save_snapshot
from tests.conftest import REPO


def tree_digest(path) -> str:
    """sha256 over a file, or over a folder's relative paths and bytes (.mlpackage)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(path.parent).as_posix().encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def test_project_files_are_byte_identical_across_processes_and_readable_by_all(tmp_path,
                                                                             tiny_student):
    """The header's metadata was written in hash-map order, different in every process."""
    save_student(tiny_student, tmp_path / "ref.safetensors", {"ema": "true", "b": "2", "a": "1"})
    code = ("import sys, torch; from pipeline.checkpoints.project import load_student, save_student;"
            "s, h = load_student(sys.argv[1]); save_student(s, sys.argv[2], h)")
    for i in range(2):
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "ref.safetensors"),
                        str(tmp_path / f"again{i}.safetensors")], cwd=REPO, check=True)
        assert sha256_file(tmp_path / f"again{i}.safetensors") == sha256_file(tmp_path / "ref.safetensors")
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "ref.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask  # not 0600


def test_teacher_files_and_snapshots_are_byte_identical(tmp_path, tiny_teacher):
    for name in ("a", "b"):
        save_teacher(tiny_teacher, tmp_path / f"{name}.safetensors", {"source": "x", "format": "y"})
        # snapshots are written under a random temporary name first
        save_snapshot(tmp_path / name, 10, {"student": tiny_teacher.state_dict(),
                                            "rng": torch.get_rng_state(), "losses": [{"a": 1.0}]})
    assert sha256_file(tmp_path / "a.safetensors") == sha256_file(tmp_path / "b.safetensors")
    assert sha256_file(tmp_path / "a/step-00000010.pt") == sha256_file(tmp_path / "b/step-00000010.pt")


@pytest.mark.parametrize("fmt", ["onnx", "pte", "coreml"])
def test_every_export_format_is_byte_identical(tmp_path, tiny_teacher, tiny_student, fmt):
    if why := formats.unavailable(fmt):
        pytest.skip(why)
    digests = set()
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        path = tmp_path / name / f"m{formats.SUFFIX[fmt]}"
        formats.export(fmt, build(tiny_student, tiny_teacher, "wplus"), path, False, 18)
        digests.add(tree_digest(path))
    assert len(digests) == 1
