"""The export component end to end (real files, a real MLflow store with its registry),
and its bad inputs: exit 2 with one line naming the problem, nothing published."""

from __future__ import annotations

import json

import pytest
import yaml

from components.export import main
from pipeline.io import sha256_file
from tests.conftest import tiny_params

CONTRACT = {"onnx_max_abs_err", "pte_max_abs_err", "onnx_bytes", "pte_bytes"}


def export_params(**overrides) -> dict:
    cfg = {"formats": ["onnx", "pte", "coreml"], "inputs": ["wplus"], "fp16": False,
           "parity": {"samples": 2}, "lpips": "alex", "int8": {"formats": []},
           "registry": {"name": "tiny-student"}, "workers": 1}
    for key, value in overrides.items():
        if isinstance(value, dict):
            cfg.setdefault(key, {}).update(value)
        else:
            cfg[key] = value
    return {**tiny_params(), "export": cfg}


def run(workdir, files, params: dict, search: dict | None = None) -> int:
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    if search is not None:
        (workdir / "configs.json").write_text(json.dumps(search))
    student, teacher = files
    return main(["--params", "params.yaml", "--student", str(student), "--teacher", str(teacher),
                 "--search", "configs.json", "--evaluate", "evaluate.json", "--out", "export",
                 "--metrics", "metrics.json", "--no-progress"])


def search_configs(full_widths: list[int], budgets: dict) -> dict:
    return {"resolution": 32, "full": {"channels": full_widths, "resolution": 32, "macs": 1,
                                       "params": 1}, "budgets": budgets}


def test_every_model_in_every_format_with_cards_metrics_and_registry(workdir, export_files,
                                                                     tiny_student):
    import mlflow

    (workdir / "evaluate.json").write_text(json.dumps({"models": {"full": {"lpips": 0.2}}}))
    search = search_configs(tiny_student.cfg.full_widths, {
        "b16": {"channels": [8, 8, 8, 8], "resolution": 16, "macs": 9, "params": 9,
                "budget_macs": 10, "lpips": 0.3}})
    # the two models written and checked in two worker processes
    assert run(workdir, export_files, export_params(inputs=["wplus", "z"], workers=2), search) == 0

    metrics = json.loads((workdir / "metrics.json").read_text())
    assert set(metrics["models"]) == {"full", "b16"}
    for name, m in metrics["models"].items():
        assert CONTRACT <= set(m)
        assert m["onnx_max_abs_err"] < 1e-3 and m["pte_max_abs_err"] < 1e-3
        assert m["onnx_lpips_alex_randinit"] < 0.01  # named by the network that measured it
        assert not any(k.endswith("_lpips") for k in m)
        assert m["variants"]["z"]["onnx_max_abs_err"] < 1e-3
        assert m["onnx_bytes"] == (workdir / "export" / name / "wplus.onnx").stat().st_size
    assert metrics["models"]["b16"]["resolution"] == 16
    assert metrics["models"]["b16"]["params"] < metrics["models"]["full"]["params"]

    folder = workdir / "export" / "full"
    names = {p.name for p in folder.iterdir()}
    assert {f"{k}{s}" for k in ("wplus", "z") for s in (".onnx", ".pte", ".mlpackage")} | {
        "card.json", "card.md"} == names
    card = json.loads((folder / "card.json").read_text())
    assert card["architecture"]["channels"] == tiny_student.cfg.full_widths
    assert card["resolution"] == 32 and card["cost"]["params"] > 0 and card["cost"]["macs"] > 0
    assert card["evaluate"] == {"lpips": 0.2}
    assert [i["name"] for i in card["inputs"]] == ["wplus", "z"]
    assert card["output"]["range"] == [0.0, 1.0]
    files = {f["path"]: f for f in card["files"]}
    assert "wplus.mlpackage/Manifest.json" in files and "wplus.onnx" in files
    for path, f in files.items():
        assert f["sha256"] == sha256_file(folder / path) and f["bytes"] == (folder / path).stat().st_size
    coreml = [a for a in card["artifacts"] if a["format"] == "coreml"]
    assert coreml and all("Apple" in a["note"] for a in coreml)
    markdown = (folder / "card.md").read_text()
    assert "wplus.onnx" in markdown and files["wplus.onnx"]["sha256"] in markdown
    sub = json.loads((workdir / "export" / "b16" / "card.json").read_text())
    assert sub["architecture"]["channels"] == [8, 8, 8, 8] and sub["search"]["budget_macs"] == 10

    client = mlflow.MlflowClient()
    run_ = client.search_runs([client.get_experiment_by_name("stylegan-mobile").experiment_id],
                              "tags.stage = 'export'")[0]
    assert run_.info.status == "FINISHED" and run_.data.metrics["models.full.onnx_bytes"] > 0
    artifacts = {a.path for a in client.list_artifacts(run_.info.run_id, "export")}
    assert {"export/full", "export/b16"} <= artifacts
    version = client.get_model_version("tiny-student", "1")
    assert version.description.startswith("# full") and "sha256" in version.description
    assert version.tags["input"] == "wplus" and version.tags["budget"] == "full"
    assert version.tags["run_id"] == run_.info.run_id and float(version.tags["macs"]) > 0
    budget = client.get_model_version_by_alias("tiny-student-b16", "champion")
    assert budget.tags["budget"] == "b16" and budget.tags["resolution"] == "16"
    assert run_.data.tags["registered_model.b16"] == "tiny-student-b16/1"
    model = mlflow.models.get_model_info("models:/tiny-student/1")
    assert model.signature.inputs.to_dict()[0]["name"] == "wplus"
    assert list(model.signature.outputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 3, 32, 32]


def test_without_search_configs_only_the_full_student_is_exported(workdir, export_files):
    params = export_params(formats=["onnx"], inputs=["w"], fp16=False, registry={"enabled": False})
    assert run(workdir, export_files, params) == 0
    assert [p.name for p in (workdir / "export").iterdir()] == ["full"]
    assert CONTRACT - {"pte_max_abs_err", "pte_bytes"} <= set(
        json.loads((workdir / "metrics.json").read_text())["models"]["full"])


def test_a_parity_error_that_grows_beyond_its_tolerance_regresses_the_run(workdir, export_files,
                                                                          monkeypatch):
    import mlflow

    from pipeline import tracking

    params = export_params(formats=["onnx"], inputs=["w"], fp16=False, registry={"enabled": False})
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "night-1")
    assert run(workdir, export_files, params) == 0
    first = json.loads((workdir / "metrics.json").read_text())
    assert first["since_last"] == {} and first["regressed"] == 0
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    night_1 = tracking.find_pipeline_run(client, experiment, "night-1")
    error = client.get_run(night_1).data.metrics["parity_max_abs_err"]
    assert error == first["models"]["full"]["onnx_max_abs_err"]
    client.log_metric(night_1, "parity_max_abs_err", error - 1e-3)  # last night's was far smaller
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "night-2")
    assert run(workdir, export_files, params) == 0
    second = json.loads((workdir / "metrics.json").read_text())
    assert second["regressed"] == 1 and second["since_last"]["parity_max_abs_err"] == pytest.approx(1e-3)
    tags = client.get_run(tracking.find_pipeline_run(client, experiment, "night-2")).data.tags
    assert tags["regressed"] == "true" and tags["compared_with"] == "pipeline night-1"
    assert tags["regressed.parity_max_abs_err"].endswith("(tolerance 0.0002)")
    assert "**Regressed**: parity_max_abs_err" in tags["mlflow.note.content"]


def test_a_format_that_is_not_installed_is_skipped_and_the_others_are_produced(
        workdir, export_files, monkeypatch, caplog):
    from pipeline.stages import export as stage

    monkeypatch.setattr(stage, "unavailable",
                        lambda fmt: "coreml: coremltools is not usable here" if fmt == "coreml" else None)
    params = export_params(formats=["onnx", "coreml"], inputs=["w"], fp16=False,
                           registry={"enabled": False})
    assert run(workdir, export_files, params) == 0
    names = {p.name for p in (workdir / "export" / "full").iterdir()}
    assert "w.onnx" in names and not any(n.endswith(".mlpackage") for n in names)
    card = json.loads((workdir / "export" / "full" / "card.json").read_text())
    assert "coremltools" in card["formats_skipped"]["coreml"]
    assert json.loads((workdir / "metrics.json").read_text())["formats_skipped"] == 1
    assert "coremltools is not usable" in caplog.text


def test_a_failing_parity_check_names_the_model_and_publishes_nothing(workdir, export_files,
                                                                      capsys):
    (workdir / "export").mkdir()
    (workdir / "export" / "previous.txt").write_text("the last good export")
    params = export_params(formats=["onnx"], inputs=["w"], fp16=False,
                           parity={"max_abs_err": 1e-12})
    assert run(workdir, export_files, params) == 2
    err = capsys.readouterr().err
    assert "full/w.onnx: parity check failed" in err and "max abs error" in err
    assert [p.name for p in (workdir / "export").iterdir()] == ["previous.txt"]
    assert not (workdir / "metrics.json").exists()


@pytest.mark.parametrize("budget, expected", [
    ({"channels": [64, 8, 8, 8, 4, 4], "resolution": 32}, "budget 'big' does not fit the student"),
    ({"channels": [8, 8, 8], "resolution": 32}, "budget 'big' does not fit the student"),
    ({"channels": [8, 8, 8, 8, 4, 4], "resolution": 24}, "budget 'big' does not fit the student"),
])
def test_a_configuration_that_does_not_fit_the_student_is_a_clear_error(
        workdir, export_files, tiny_student, capsys, budget, expected):
    search = search_configs(tiny_student.cfg.full_widths, {"big": budget})
    assert run(workdir, export_files, export_params(), search) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("export: error: ") and expected in errors[0]
    assert not (workdir / "export").exists()


def test_configurations_searched_on_another_student_are_refused(workdir, export_files, capsys):
    search = search_configs([32, 32, 32, 32, 16, 16], {})
    assert run(workdir, export_files, export_params(), search) == 2
    assert "the search ran on another student" in capsys.readouterr().err


def test_a_checkpoint_without_ema_weights_is_refused(workdir, tiny_teacher, tiny_student, capsys):
    from pipeline.checkpoints import save_teacher
    from pipeline.checkpoints.project import save_student

    save_student(tiny_student, workdir / "s.safetensors", {"steps": "8"})
    save_teacher(tiny_teacher, workdir / "t.safetensors")
    files = (workdir / "s.safetensors", workdir / "t.safetensors")
    assert run(workdir, files, export_params()) == 2
    assert "not EMA weights" in capsys.readouterr().err
    assert not (workdir / "export").exists()


def test_bad_export_params_name_the_key(workdir, export_files, capsys):
    params = export_params(formats=["onnx", "tflite"], output_range=[0, 255])
    assert run(workdir, export_files, params) == 2
    assert "export.formats.1" in capsys.readouterr().err


def test_champion_moves_only_to_a_version_that_passes_the_gate(workdir, export_files):
    """Three nightly exports of the same student, judged by the evaluate figures they
    come with; a consumer runs whatever is champion."""
    import mlflow
    import numpy as np
    import onnxruntime

    params = export_params(formats=["onnx"], inputs=["w"], fp16=False)
    client = mlflow.MlflowClient()

    def night(psnr: float, ms: float) -> dict:
        (workdir / "evaluate.json").write_text(json.dumps({"models": {"full": {
            "psnr_median": psnr, "exploded": 0,
            "latency": {"onnxruntime": {"batch_1": {"median_ms": ms}}}}}}))
        assert run(workdir, export_files, params) == 0
        return {k: str(v) for k, v in client.get_registered_model("tiny-student").aliases.items()}

    assert night(20.0, 1.0) == {"champion": "1", "candidate": "1"}
    assert client.get_model_version("tiny-student", "1").tags["promotion"] == "champion"
    assert night(19.0, 1.0) == {"champion": "1", "candidate": "2"}  # 1 dB worse: held back
    assert client.get_model_version("tiny-student", "2").tags["promotion"] == (
        "candidate only: PSNR 19.00 dB < champion's 20.00 - 0.5")
    assert night(19.8, 1.2) == {"champion": "3", "candidate": "3"}  # within the gate
    assert night(20.5, 2.0).get("champion") == "3"  # closer, but 67 % slower
    assert "onnxruntime 2 ms > champion's 1.2 ms + 25%" in client.get_model_version(
        "tiny-student", "4").tags["promotion"]

    # the consumer: whatever champion is, by alias, run in onnxruntime
    model = mlflow.onnx.load_model("models:/tiny-student@champion")
    session = onnxruntime.InferenceSession(model.SerializeToString())
    (image,) = session.run(None, {"w": np.random.default_rng(0).standard_normal((2, 32), np.float32)})
    assert image.shape == (2, 3, 32, 32) and 0 <= image.min() and image.max() <= 1
