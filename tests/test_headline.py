"""The pipeline run carries the story: headline figures under short names, the effective
params, the profile, summary files and a description, put there by the stages themselves."""

from __future__ import annotations

import json

import mlflow

from components.distill import main as distill_main
from components.fetch_teacher import main as fetch_main
from pipeline import tracking
from pipeline.headline import VIEW_TAG, compare, describe, headline, view_figures, view_state
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
    search["budgets"]["web"] = {"macs": 2e6, "budget_ms": 0.5, "latency_ms_predicted": 0.3,
                                "latency_ms_measured": 0.31, "within_budget": 1, "runtime": "onnxruntime"}
    search["latency_model"] = {"executorch-int8": {"median_abs_err": 0.02, "max_abs_err": 0.09,
                                                   "table_seconds": 60.0}}
    assert headline("search", search) == {
        "half_macs": 6e6, "half_lpips_alex_randinit_to_full": 0.006, "web_macs": 2e6,
        "web_budget_ms": 0.5, "web_latency_ms_predicted": 0.3, "web_latency_ms_measured": 0.31,
        "web_within_budget": 1.0, "latency_model_executorch-int8_median_abs_err": 0.02,
        "latency_model_executorch-int8_max_abs_err": 0.09}
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
              "latency_ratio_1024_onnxruntime": 6.0, "full_ms_onnxruntime": 1.0, "gone_psnr": 9.0,
              "parity_max_abs_err": 1e-5}
    tolerance = Regression(psnr_db=0.5, fid_relative=0.1, latency_ratio_relative=0.1, exploded=0,
                           parity_abs=2e-4)
    within = {"full_psnr": 19.6, "full_exploded": 0.0, "full_fid": 10.9, "half_psnr": 19.0,
              "latency_ratio_1024_onnxruntime": 5.5, "full_ms_onnxruntime": 3.0, "new_psnr": 1.0,
              "parity_max_abs_err": 2e-4}
    ok = compare(within, before, "pipeline night-1", tolerance)
    assert ok.regressed == {} and ok.previous == "pipeline night-1"
    assert set(ok.deltas) == set(before) - {"gone_psnr"}  # shared figures only
    assert ok.deltas["full_ms_onnxruntime"] == 2.0 and "full_ms_onnxruntime" not in ok.judged
    beyond = {**within, "full_psnr": 19.4, "full_exploded": 1.0, "full_fid": 11.1,
              "latency_ratio_1024_onnxruntime": 5.3, "parity_max_abs_err": 3e-4}
    worse = compare(beyond, before, "pipeline night-1", tolerance)
    assert list(worse.regressed) == ["full_exploded", "full_fid", "full_psnr",
                                     "latency_ratio_1024_onnxruntime", "parity_max_abs_err"]
    assert worse.regressed["full_psnr"] == "20 -> 19.4 (tolerance 0.5 dB)"
    assert worse.summary().startswith("full_exploded 0 -> 1 (tolerance 0); full_fid 10 -> 11.1 ")
    # better is never worse, however far it moves
    better = {**within, "full_psnr": 30.0, "full_fid": 1.0, "parity_max_abs_err": 0.0}
    assert compare(better, before, "pipeline night-1", tolerance).regressed == {}
    assert compare(beyond, None, None, tolerance).deltas == {}


def test_the_headline_view_shows_pipeline_runs_with_the_key_figures_as_columns():
    figures = {"distill_psnr_end": 21.0, "full_psnr": 20.0, "teacher_params": 3e6, "half_macs": 6e6,
               "half_psnr": 19.0, "half_ms_executorch": 1.2, "half_ms_pytorch": 3.0,
               "latency_ratio_1024_executorch": 8.3, "regressed": 0.0}
    assert view_figures(figures) == ["distill_psnr_end", "full_psnr", "latency_ratio_1024_executorch",
                                     "regressed", "half_macs", "half_psnr", "half_ms_executorch"]
    state = json.loads(view_state(view_figures(figures)))
    assert state["searchFilter"] == "tags.role = 'pipeline'"
    assert state["selectedColumns"][:3] == ["params.`profile`", "metrics.`distill_psnr_end`",
                                            "metrics.`full_psnr`"]
    assert tracking.headline_view_url("http://127.0.0.1:5000/", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
        "&viewStateShareKey=headline")


def test_the_run_verdict_adds_up_the_stages_verdicts(mlflow_uri):
    """evaluate and export judge different figures of one pipeline run; a stage run again
    (a retried task) replaces its own verdict and leaves the other's."""
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment("verdicts")).info.run_id

    def verdict(judged, regressed):
        tracking.record_verdict(client, run, {"compared_with": "pipeline night-1", "judged": judged,
                                              "regressed": regressed})
        return client.get_run(run).data

    evaluate = ["full_psnr", "full_fid"]
    data = verdict(evaluate, {"full_psnr": "20 -> 18 (tolerance 0.5 dB)"})
    assert data.tags["regressed"] == "true" and data.metrics["regressed"] == 1
    data = verdict(["parity_max_abs_err"], {"parity_max_abs_err": "1e-05 -> 0.001 (tolerance 0.0002)"})
    assert data.tags["regressed_figures"] == ("full_psnr 20 -> 18 (tolerance 0.5 dB); "
                                              "parity_max_abs_err 1e-05 -> 0.001 (tolerance 0.0002)")
    data = verdict(evaluate, {})  # evaluate again: PSNR is fine now, the parity error is not
    assert data.tags["regressed_figures"].startswith("parity_max_abs_err ")
    assert "regressed.full_psnr" not in data.tags
    data = verdict(["parity_max_abs_err"], {})
    assert data.tags["regressed"] == "false" and data.metrics["regressed"] == 0
    assert data.tags["regressed_figures"] == "" and data.tags["compared_with"] == "pipeline night-1"


def test_the_stages_fill_the_pipeline_run(tmp_path, monkeypatch, mlflow_uri):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(tracking.RUN_GROUP_ENV, "nightly-7")
    params = tiny_params()
    params["distill"] = {**params["distill"], "steps": 2, "validation": {"every": 2, "num_samples": 4,
                                                                          "grid_samples": 2,
                                                                          "max_exploded": None}}
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
    view = json.loads(client.get_experiment(experiment.experiment_id).tags[VIEW_TAG])
    assert "metrics.`distill_psnr_end`" in view["selectedColumns"]  # the runs table's columns
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "summary")] == ["summary/samples.png"]
