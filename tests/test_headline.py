"""The pipeline run carries the story: headline figures under short names, the effective
params, the profile, summary files and a description, put there by the stages themselves."""

from __future__ import annotations

import mlflow

from components.distill import main as distill_main
from components.fetch_teacher import main as fetch_main
from pipeline import tracking
from pipeline.headline import compare, describe, headline
from pipeline.params import Regression
from tests.conftest import tiny_params


def test_each_stage_contributes_its_figures_under_short_names():
    evaluate = {"latency_ratio_1024": {"onnxruntime": 5.9},
                "models": {"teacher": {"psnr_median": 100.0, "fid_randinit": 0.2},
                           "full": {"psnr_median": 19.7, "exploded": 0, "fid_randinit": 1.1,
                                    "latency": {"onnxruntime": {"batch_1": {"median_ms": 0.8}}}},
                           "half_uniform": {"psnr_median": 19.4}}}
    assert headline("evaluate", evaluate) == {
        "latency_ratio_1024_onnxruntime": 5.9, "teacher_fid_randinit": 0.2, "full_psnr": 19.7,
        "full_exploded": 0.0, "full_fid_randinit": 1.1, "full_ms_onnxruntime": 0.8}
    search = {"budgets": {"half": {"macs": 6e6, "lpips_alex_randinit": 0.006,
                                   "lpips_alex_randinit_teacher": 0.2, "uniform_lpips_alex_randinit": 0.01}}}
    assert headline("search", search) == {"half_macs": 6e6, "half_lpips_alex_randinit_to_full": 0.006}
    export = {"models": {"full": {"onnx_max_abs_err": 1e-6, "pte_max_abs_err": 3e-6},
                         "half": {"onnx_max_abs_err": 2e-6}}}
    assert headline("export", export) == {"parity_max_abs_err": 3e-6}
    assert headline("distill", {"steps": 8, "psnr_to_teacher_end": 19.0, "psnr_to_teacher_start": 12.0,
                                "lpips_vgg_randinit_to_teacher_end": 0.05}) == {
        "distill_steps": 8.0, "distill_psnr_start": 12.0, "distill_psnr_end": 19.0,
        "distill_lpips_vgg_randinit_end": 0.05}


def test_the_description_is_a_table_of_what_the_run_measured():
    note = describe({"teacher_params": 2.3e6, "teacher_resolution": 64, "half_macs": 6.3e6,
                     "half_psnr": 19.9, "full_psnr": 19.7, "full_ms_onnxruntime": 0.85},
                    {"run_group": "nightly-7", "profile": "offline", "stand_in_weights": "true"})
    assert note.startswith("**Pipeline run** `nightly-7`, profile `offline`, stand-in weights.")
    assert "| full |  | 19.7 |  | 0.85 |  |" in note and "| half | 6,300,000 | 19.9 |" in note


def test_a_run_regresses_only_beyond_the_tolerances():
    before = {"full_psnr": 20.0, "full_exploded": 0.0, "full_fid": 10.0, "half_psnr": 19.0,
              "latency_ratio_1024_onnxruntime": 6.0, "full_ms_onnxruntime": 1.0, "gone_psnr": 9.0}
    tolerance = Regression(psnr_db=0.5, fid_relative=0.1, latency_ratio_relative=0.1, exploded=0)
    within = {"full_psnr": 19.6, "full_exploded": 0.0, "full_fid": 10.9, "half_psnr": 19.0,
              "latency_ratio_1024_onnxruntime": 5.5, "full_ms_onnxruntime": 3.0, "new_psnr": 1.0}
    ok = compare(within, before, "pipeline night-1", tolerance)
    assert ok.regressions == [] and ok.previous == "pipeline night-1"
    assert set(ok.deltas) == set(before) - {"gone_psnr"}  # shared figures only
    assert ok.deltas["full_ms_onnxruntime"] == 2.0  # reported, not judged
    beyond = {**within, "full_psnr": 19.4, "full_exploded": 1.0, "full_fid": 11.1,
              "latency_ratio_1024_onnxruntime": 5.3}
    worse = compare(beyond, before, "pipeline night-1", tolerance).regressions
    assert [w.split()[0] for w in worse] == ["full_exploded", "full_fid", "full_psnr",
                                             "latency_ratio_1024_onnxruntime"]
    assert worse[2] == "full_psnr 20 -> 19.4 (tolerance 0.5 dB)"
    assert compare(beyond, None, None, tolerance).deltas == {}


def test_the_stages_fill_the_pipeline_run(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "nightly-7")
    params = tiny_params()
    params["distill"] = {**params["distill"], "steps": 2, "validation": {"every": 2, "num_samples": 4,
                                                                          "grid_samples": 2}}
    import yaml

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert fetch_main(["--no-progress", "--out", "teacher"]) == 0
    assert distill_main(["--no-progress", "--teacher", "teacher/teacher.safetensors",
                         "--out", "student", "--snapshots", "snap", "--plots", "plots"]) == 0
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = mlflow.search_runs([experiment.experiment_id], filter_string="tags.role = 'pipeline'",
                                   output_format="list")
    figures = parent.data.metrics
    assert figures["teacher_resolution"] == 32 and figures["distill_steps"] == 2
    assert {"distill_psnr_start", "distill_psnr_end", "teacher_params"} <= set(figures)
    assert parent.data.params["distill.steps"] == "2" and parent.data.params["profile"] == "test-tiny"
    assert parent.data.tags["profile"] == "test-tiny" and parent.data.tags["stand_in_weights"] == "true"
    note = parent.data.tags["mlflow.note.content"]
    assert "Distilled 2 steps: PSNR to the teacher" in note and "Teacher: " in note
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "summary")] == ["summary/samples.png"]
