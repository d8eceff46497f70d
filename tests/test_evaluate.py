"""The evaluate stage: teacher, full student and searched configurations side by side;
reference statistics from teacher samples, a folder or an .npz; bad inputs."""

from __future__ import annotations

import json
import math

import mlflow
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from components.evaluate import main
from pipeline.checkpoints import save_teacher
from pipeline.checkpoints.project import save_student
from pipeline.errors import PipelineError
from pipeline.models.elastic import uniform_widths
from pipeline.models.mobile import MobileSynthesis, StudentConfig, calibrate_demodulation
from pipeline.models.sampling import teacher_targets
from tests.conftest import REPO, run_stage, tiny_evaluate, tiny_metric_networks, tiny_params


def evaluate_cfg(networks: dict | None = None, **overrides) -> dict:
    """params.yaml content; latency off unless a test asks for it (it has its own test)."""
    cfg = tiny_evaluate(**{"latency": {"enabled": False}, **overrides})
    return {**tiny_params(), "evaluate": cfg, "metric_networks": tiny_metric_networks(**(networks or {}))}


@pytest.fixture
def inputs(tmp_path, tiny_teacher):
    """Teacher, an untrained calibrated student and a search result with one budget."""
    cfg = StudentConfig.from_teacher(tiny_teacher.cfg.channels, 32, tiny_teacher.cfg.style_dim)
    student = MobileSynthesis(cfg)
    t = teacher_targets(tiny_teacher, 8, 1.0, 0.0, torch.Generator().manual_seed(0),
                        torch.device("cpu"))
    calibrate_demodulation(student, [(t.wplus, t.noise)])
    save_teacher(tiny_teacher, tmp_path / "teacher.safetensors")
    save_student(student, tmp_path / "student.safetensors", {"ema": "true"})
    half, quarter = uniform_widths(cfg, 0.5), uniform_widths(cfg, 0.25)
    configs = {"budgets": {
        "b16": {"channels": half, "resolution": 16, "trivial": False,
                "uniform": {"channels": quarter, "resolution": 32}},
        "all": {"channels": cfg.full_widths, "resolution": 32, "trivial": True,
                "uniform": {"channels": cfg.full_widths, "resolution": 32}},
    }}
    (tmp_path / "configs.json").write_text(json.dumps(configs))
    return tmp_path


def run(inputs, params):
    """The stage's metrics and the networks that ran on stand-in weights."""
    result = run_stage("evaluate", params, inputs / "cache", teacher=inputs / "teacher.safetensors",
                       student=inputs / "student.safetensors", search=inputs / "configs.json",
                       out=inputs / "out", plots=inputs / "plots")
    return result.metrics, result.stand_ins


def test_every_model_side_by_side_with_stand_in_names_and_a_cached_reference(inputs):
    metrics, stand_ins = run(inputs, evaluate_cfg())
    assert set(metrics["models"]) == {"teacher", "full", "b16", "b16_uniform"}  # trivial: = full
    for entry in (metrics["teacher"], metrics["student"]):
        assert {"fid_randinit", "kid_randinit", "lpips_alex_randinit", "pixel_l1", "mse", "params",
                "macs"} <= set(entry)
        assert "fid" not in entry and "kid" not in entry and "lpips_alex" not in entry
    assert metrics["teacher"]["psnr_median"] == pytest.approx(100) and metrics["teacher"]["exploded"] == 0
    assert metrics["student"]["psnr_p10"] <= metrics["student"]["psnr_median"] < 100
    assert metrics["psnr_mean_image_p10"] <= metrics["psnr_mean_image_median"] < 100
    assert metrics["teacher"]["lpips_alex_randinit"] == 0 and metrics["teacher"]["pixel_l1"] == 0
    # an untrained student is further from the teacher's distribution than the teacher is
    assert metrics["teacher"]["fid_randinit"] < metrics["student"]["fid_randinit"]
    assert metrics["models"]["b16"]["resolution"] == 16
    assert metrics["models"]["b16"]["macs"] < metrics["student"]["macs"] < metrics["teacher"]["macs"]
    assert metrics["fid_rank_deficient"] == 1 and metrics["stand_in_features"] == 1
    assert stand_ins == ["lpips_alex_randinit", "inception_randinit"]
    report = (inputs / "out" / "report.md").read_text()
    assert "stand-in (random) weights" in report and "fid_randinit" in report
    assert "| b16 | searched | 16px |" in report
    grid = Image.open(inputs / "out" / "grid.png")
    assert grid.size[0] > grid.size[1]  # 3 columns (teacher, full, b16) x 2 samples
    assert (inputs / "out" / "pareto.png").stat().st_size > 10_000
    rows = (inputs / "plots" / "quality.csv").read_text().splitlines()
    assert rows[0] == "model,kind,gmacs,fid,lpips" and len(rows) == 5

    # the reference statistics are cached by what they depend on
    again, _ = run(inputs, evaluate_cfg())
    assert metrics["reference_cached"] == 0 and again["reference_cached"] == 1
    assert again["teacher"]["fid_randinit"] == pytest.approx(metrics["teacher"]["fid_randinit"])
    other, _ = run(inputs, evaluate_cfg(reference={"seed": 7}))
    assert other["reference_cached"] == 0


def test_a_real_image_folder_of_mixed_sizes_is_resized_consistently(inputs):
    folder = inputs / "real"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(40, 40), (64, 48), (32, 32), (50, 70)] * 3):
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    metrics, _ = run(inputs, evaluate_cfg(reference={"source": "folder", "path": str(folder)}))
    assert metrics["reference_samples"] == 8  # num_samples of the 12 images
    assert math.isfinite(metrics["student"]["fid_randinit"])
    assert metrics["reference_cached"] == 0
    (folder / "broken.png").write_text("not an image")
    with pytest.raises(PipelineError, match="broken.png: unreadable image"):
        run(inputs, evaluate_cfg(reference={"source": "folder", "path": str(folder), "num_samples": 20}))


def test_too_few_samples_fail_by_default_naming_the_key(inputs):
    with pytest.raises(PipelineError, match="evaluate.num_samples"):
        run(inputs, evaluate_cfg(low_sample_fid="fail"))
    assert not (inputs / "out").exists()  # decided before any output


def test_the_stage_cli_logs_to_mlflow_and_rejects_a_bad_npz(inputs, monkeypatch, mlflow_uri):
    monkeypatch.chdir(inputs)
    params = {**tiny_params(), "evaluate": tiny_evaluate(latency={"enabled": False})}
    (inputs / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", "params.yaml", "--teacher", "teacher.safetensors",
            "--student", "student.safetensors", "--search", "configs.json", "--out", "out",
            "--plots", "plots", "--metrics", "evaluate.json", "--no-progress"]
    assert main(args) == 0
    metrics = json.loads((inputs / "evaluate.json").read_text())
    (run_,) = [r for r in mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list")
               if r.data.tags.get("stage") == "evaluate"]
    assert run_.data.tags["stand_in_weights"] == "true"
    assert run_.data.metrics["student.fid_randinit"] == pytest.approx(metrics["student"]["fid_randinit"])
    assert run_.data.metrics["models.b16.lpips_alex_randinit"] == pytest.approx(
        metrics["models"]["b16"]["lpips_alex_randinit"])
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(run_.info.run_id, "evaluate")}
    assert {"evaluate/report.md", "evaluate/grid.png", "evaluate/pareto.png"} <= logged

    np.savez(inputs / "ref.npz", mu=np.zeros(10), sigma=np.eye(10))
    params["evaluate"]["reference"] = {"source": "npz", "path": "ref.npz"}
    (inputs / "params.yaml").write_text(yaml.safe_dump(params))
    before = (inputs / "out" / "report.md").read_text()
    assert main(args) == 2
    assert (inputs / "out" / "report.md").read_text() == before  # nothing half-written


def test_each_run_is_compared_with_the_last_finished_one_and_a_regression_is_tagged(
        inputs, monkeypatch, mlflow_uri):
    from pipeline import tracking

    monkeypatch.chdir(inputs)
    (inputs / "params.yaml").write_text(yaml.safe_dump(evaluate_cfg()))
    args = ["--teacher", "teacher.safetensors", "--student", "student.safetensors",
            "--search", "configs.json", "--out", "out", "--plots", "plots",
            "--metrics", "evaluate.json", "--no-progress"]
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "night-1")
    assert main(args) == 0
    first = json.loads((inputs / "evaluate.json").read_text())
    assert first["since_last"] == {} and first["regressed"] == 0
    assert "No previous finished run of this profile" in (inputs / "out" / "report.md").read_text()

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT).experiment_id
    night_1 = tracking.find_pipeline_run(client, experiment, "night-1")
    assert client.get_run(night_1).info.status == "FINISHED"
    # last night's student was 3 dB closer to the teacher, its KID a tenth of tonight's
    client.log_metric(night_1, "full_psnr", first["models"]["full"]["psnr_median"] + 3.0)
    client.log_metric(night_1, "full_kid_randinit", first["models"]["full"]["kid_randinit"] / 10)
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "night-2")
    assert main(args) == 0
    second = json.loads((inputs / "evaluate.json").read_text())
    assert second["since_last"]["full_psnr"] == pytest.approx(-3.0, abs=1e-4)
    assert second["since_last"]["b16_psnr"] == pytest.approx(0.0, abs=1e-4)  # same student
    assert second["regressed"] == 1
    report = (inputs / "out" / "report.md").read_text()
    assert "Compared with `pipeline night-1`: **regressed** (2 figure(s)" in report
    assert "| full_psnr |" in report and "| b16_psnr |" in report
    run = client.get_run(tracking.find_pipeline_run(client, experiment, "night-2"))
    assert run.data.tags["regressed"] == "true" and run.data.metrics["regressed"] == 1
    assert run.data.tags["regressed_figures"].startswith("full_kid_randinit ")
    assert "**Regressed**: full_kid_randinit" in run.data.tags["mlflow.note.content"]
    assert run.data.tags["regressed.full_psnr"].endswith("(tolerance 0.5 dB)")
    assert "full_ms_onnxruntime" not in run.data.tags["regressed_figures"]  # reported, not judged

    # within the tolerances (the same student again): compared, not regressed
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "night-3")
    assert main(args) == 0
    third = json.loads((inputs / "evaluate.json").read_text())
    assert third["regressed"] == 0 and third["since_last"]["full_psnr"] == pytest.approx(0, abs=1e-4)
    run = client.get_run(tracking.find_pipeline_run(client, experiment, "night-3"))
    assert run.data.tags["regressed"] == "false" and run.data.tags["compared_with"] == "pipeline night-2"
    assert not [t for t in run.data.tags if t.startswith("regressed.")]


def test_with_latency_off_every_output_dvc_yaml_declares_is_written(inputs):
    """dvc repro fails on a declared output the stage did not write, whatever the params.
    metrics/evaluate.json is left out: stages.execute writes it for every stage."""
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]
    declared = [next(iter(out)) if isinstance(out, dict) else out
                for kind in ("outs", "plots") for out in stage[kind]]
    work = inputs / "work"
    # no search result (it is optional): the teacher and the full student only, to be quick
    run_stage("evaluate", evaluate_cfg(), inputs / "cache", teacher=inputs / "teacher.safetensors",
              student=inputs / "student.safetensors", search=work / "absent.json",
              out=work / "artifacts/evaluate", plots=work / "plots/evaluate")
    assert "plots/evaluate/latency.csv" in declared
    assert [path for path in declared if not (work / path).exists()] == []
    assert (work / "plots/evaluate/latency.csv").read_text().splitlines() == [
        "model,runtime,batch,median_ms,p90_ms,gmacs_per_s,efficiency"]


def test_missing_inception_weights_say_how_to_provide_them(inputs):
    with pytest.raises(PipelineError, match="metric_networks.inception.weights") as e:
        run(inputs, evaluate_cfg(networks={"inception": {"stand_in": False}}))
    assert "metric_networks.inception.stand_in" in str(e.value)


def test_latency_of_every_model_in_every_runtime_in_the_same_run(inputs, monkeypatch):
    from pipeline.bench import suite

    real = suite.latency_ratio_1024  # the 1024 ratio's machinery at 32 px, 32 channels
    monkeypatch.setattr(suite, "latency_ratio_1024", lambda runtimes, resolution, *args, **kw: real(
        runtimes, 32, *args, channel_max=32, style_dim=32, n_mlp=2, **kw))
    runtimes = ["pytorch", "onnxruntime", "onnxruntime-int8"]
    cfg = evaluate_cfg(latency={"enabled": True, "runtimes": runtimes, "quality_samples": 4,
                                "batch_sizes": [1], "warmup": 1, "repeats": 3, "threads": 1,
                                "ratio_1024": True, "ratio_repeats": 3, "ratio_seconds": 0})
    metrics, _ = run(inputs, cfg)
    # the ratio of the fp32 runtimes, its per-round spread, measured now (then stored)
    ratio = metrics["latency_ratio_1024"]
    assert set(ratio) == set(metrics["latency_ratio_1024_p90"]) == {"pytorch", "onnxruntime"}
    assert all(metrics["latency_ratio_1024_p10"][rt] <= r <= metrics["latency_ratio_1024_p90"][rt]
               for rt, r in ratio.items())
    assert metrics["latency_ratio_1024_cached"] == 0
    assert "measured in this run: measured 20" in (inputs / "out" / "report.md").read_text()
    for name in ("teacher", "full", "b16"):
        for runtime in runtimes:
            timing = metrics["models"][name]["latency"][runtime]["batch_1"]
            assert 0 < timing["median_ms"] <= timing["p90_ms"]
            assert timing["gmacs_per_s"] > 0
            # efficiency is against the fp32 peak: none for int8
            assert (timing.get("efficiency") is None) == (runtime == "onnxruntime-int8")
        # each file as its runtime runs it, against the teacher: int8 close to fp32, not equal
        by_rt = metrics["models"][name]["psnr_by_runtime"]
        assert set(by_rt) == {"onnxruntime", "onnxruntime-int8"} and by_rt["onnxruntime-int8"] > 10
        assert by_rt["onnxruntime"] != by_rt["onnxruntime-int8"]
    assert metrics["models"]["teacher"]["psnr_by_runtime"]["onnxruntime"] > 60  # its own graph
    assert metrics["peak_gmacs"] > 0 and metrics["threads"] == 1
    rows = (inputs / "plots" / "latency.csv").read_text().splitlines()
    assert rows[0].startswith("model,runtime,batch,median_ms") and len(rows) == 1 + 4 * 3
    assert "## Latency" in (inputs / "out" / "report.md").read_text()
    # where the time goes: the teacher and the full student, in each runtime's profiler
    ops = json.loads((inputs / "out" / "ops.json").read_text())
    assert {m: set(per_rt) for m, per_rt in ops["profiles"].items()} == {
        "teacher": set(runtimes), "full": set(runtimes)}
    assert "## Where the time goes" in (inputs / "out" / "report.md").read_text()
    table = (inputs / "out" / "ops.csv").read_text().splitlines()
    assert table[0] == "model,runtime,op,ms,share,calls" and any(",onnxruntime,Conv" in r for r in table)
