"""A full disk: one line naming the path and "no space left", exit 2, nothing half-written
(the download cache's case is in tests/fetch/test_http.py)."""

from __future__ import annotations

import yaml

from components.distill import main as distill_main
from pipeline.checkpoints import save_teacher
from tests.conftest import full_disk_open, tiny_params


def test_a_snapshot_that_fills_the_disk_is_one_line_and_the_previous_one_survives(
        tmp_path, monkeypatch, capsys, tiny_teacher, mlflow_uri):
    import pipeline.training.checkpoint as checkpoint

    monkeypatch.chdir(tmp_path)
    save_teacher(tiny_teacher, tmp_path / "t.safetensors")
    params = tiny_params()
    params["distill"].update(steps=4, checkpoint_every=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    real_save = checkpoint.save_snapshot

    def save_then_fill(folder, step, state):  # the first snapshot fits; the disk is full after
        if step > 2:
            monkeypatch.setattr(checkpoint, "open", full_disk_open, raising=False)
        return real_save(folder, step, state)

    monkeypatch.setattr(checkpoint, "save_snapshot", save_then_fill)
    code = distill_main(["--params", "params.yaml", "--teacher", "t.safetensors", "--out", "student",
                         "--snapshots", "snap", "--plots", "plots", "--metrics", "m.json",
                         "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("distill: error: snap/step-00000004.pt: "
                              "no space left on device"), err[-1]
    assert "Traceback" not in "\n".join(err)
    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == ["step-00000002.pt"]
    assert not (tmp_path / "student").exists() and not (tmp_path / "m.json").exists()


def test_a_full_disk_anywhere_else_in_a_stage_is_one_line_too(tmp_path, monkeypatch, capsys,
                                                              mlflow_uri):
    """Outside the atomic writers (a library writing its own temporary files), the CLI
    still turns ENOSPC into one line naming the file, exit 2."""
    import errno

    from components.fetch_teacher import main
    from pipeline.stages import fetch_teacher

    def full(*args, **kwargs):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "scratch.bin"))
        except OSError as e:
            raise RuntimeError("writer failed") from e

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(fetch_teacher, "run", full)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    assert main(["--params", "params.yaml", "--out", "teacher", "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()[-1:]
    assert line.startswith(f"fetch_teacher: error: {tmp_path / 'scratch.bin'}: no space left")
