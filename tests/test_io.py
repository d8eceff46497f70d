"""Atomic outputs: all-or-nothing, and as readable as any other file the user creates."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.io import atomic_dir, atomic_path, write_json


def test_atomic_outputs_follow_the_umask_not_mkstemps_private_mode(tmp_path):
    old = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
        with atomic_dir(tmp_path / "out") as d:
            (d / "f").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


def test_a_failure_leaves_the_previous_output_untouched(tmp_path):
    write_json(tmp_path / "m.json", {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "m.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert (tmp_path / "m.json").read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_temporaries_of_killed_runs_are_swept_by_the_next_write(tmp_path):
    """A process killed with -9 leaves its temporary output beside the destination; the
    next write there removes it. Those of live processes and of other hosts stay."""
    import subprocess
    import sys

    from pipeline.scratch import owner

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = owner().rsplit("-", 1)[0]
    left = {
        "killed": tmp_path / f".m.json.{host}-{gone}.abc123.tmp",
        "killed_dir": tmp_path / f".m.json.{host}-{gone}.old.tmp",
        "live": tmp_path / f".m.json.{owner()}.xyz.tmp",
        "other_host": tmp_path / f".m.json.elsewhere-{gone}.abc.tmp",
        "other_output": tmp_path / f".n.json.{host}-{gone}.abc.tmp",
    }
    for name, path in left.items():
        path.mkdir() if name == "killed_dir" else path.write_text("half")
    write_json(tmp_path / "m.json", {"a": 1})
    assert {n for n, p in left.items() if p.exists()} == {"live", "other_host", "other_output"}


def test_a_stage_writes_its_temporaries_in_its_own_folder_and_leaves_none(tmp_path,
                                                                           monkeypatch):
    import subprocess
    import sys
    import tempfile

    from pipeline.scratch import owner, stage_scratch

    monkeypatch.chdir(tmp_path)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    killed = tmp_path / ".tmp" / "export" / f"{owner().rsplit('-', 1)[0]}-{gone}.k1.tmp"
    (killed / "x.mlpackage").mkdir(parents=True)
    with stage_scratch("export") as mine:
        made = Path(tempfile.mkdtemp(suffix=".mlpackage"))
        assert made.parent == mine and mine.parent == (tmp_path / ".tmp" / "export").resolve()
        assert os.environ["TMPDIR"] == str(mine) and not killed.exists()
    assert not (tmp_path / ".tmp").exists() and tempfile.gettempdir() != str(mine)
