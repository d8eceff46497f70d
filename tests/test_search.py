"""The search stage: budgets honoured, never worse than the uniform baseline, seeded,
bad budgets refused before searching, and the stage's outputs and MLflow records."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest
import torch
import yaml

from pipeline.checkpoints import save_teacher
from pipeline.checkpoints.project import save_student
from pipeline.errors import ParamsError
from pipeline.metrics.perceptual import LPIPS
from pipeline.models.mobile import MobileSynthesis, StudentConfig, calibrate_demodulation
from pipeline.models.sampling import teacher_targets
from pipeline.params import parse_macs, parse_params
from pipeline.stages.search import search_all
from tests.conftest import REPO, env_with_venv, tiny_params, tiny_search

LP = "lpips_alex_randinit"  # the fitness's name: LPIPS on a stand-in AlexNet


@pytest.fixture
def tiny_student(tiny_teacher):
    """An untrained (calibrated) student of the tiny teacher: search only needs weights."""
    cfg = StudentConfig.from_teacher(tiny_teacher.cfg.channels, 32, tiny_teacher.cfg.style_dim)
    student = MobileSynthesis(cfg)
    t = teacher_targets(tiny_teacher, 8, 1.0, 0.0, torch.Generator().manual_seed(0),
                        torch.device("cpu"))
    calibrate_demodulation(student, [(t.wplus, t.noise)])
    return student.eval()


@pytest.fixture(scope="module")
def lpips():
    return LPIPS("alex", None, stand_in=True)  # its figures: lpips_alex_randinit


def search_cfg(**overrides):
    return parse_params({**tiny_params(), "search": tiny_search(**overrides)}).search


def test_every_budget_is_honoured_and_never_worse_than_uniform(tiny_student, tiny_teacher, lpips):
    cfg = search_cfg(budgets={"half": 0.5, "abs": "30K", "pct": "20%"}, min_resolution=16)
    space, full, results = search_all(tiny_student, tiny_teacher, lpips, cfg, torch.device("cpu"),
                                      progress=False)
    assert [r.name for r in results] == ["half", "abs", "pct"]
    assert results[1].budget_macs == 30_000
    assert results[0].budget_macs == int(0.5 * full.macs)
    for r in results:
        assert not r.trivial
        assert r.best.macs <= r.budget_macs and r.uniform.macs <= r.budget_macs
        assert r.best.distances[LP] <= r.uniform.distances[LP]
        assert all(s.macs <= r.budget_macs for s in r.evaluated)  # never over budget
        assert r.history == sorted(r.history, reverse=True)  # elitist: never gets worse
        assert len(r.history) == cfg.evolution.generations
        assert space.cost(r.best.candidate) == (r.best.macs, r.best.params)
    # more budget, no worse a distance
    assert results[0].best.distances[LP] <= results[2].best.distances[LP]


def test_the_search_is_reproducible_with_a_seed(tiny_student, tiny_teacher, lpips):
    runs = [search_all(tiny_student, tiny_teacher, lpips, search_cfg(), torch.device("cpu"),
                       progress=False)[2] for _ in range(2)]
    assert [r.best.row() for r in runs[0]] == [r.best.row() for r in runs[1]]
    other = search_all(tiny_student, tiny_teacher, lpips,
                       search_cfg(evolution={"seed": 5, "population": 6, "generations": 3}),
                       torch.device("cpu"), progress=False)[2]
    assert [r.history for r in other] != [r.history for r in runs[0]]


def test_ssim_fitness_is_a_distance_the_search_minimises(tiny_student, tiny_teacher, lpips):
    cfg = search_cfg(budgets={"half": 0.5}, fitness="ssim")
    _, full, (r,) = search_all(tiny_student, tiny_teacher, lpips, cfg, torch.device("cpu"),
                               progress=False)
    assert full.distances["dssim"] == pytest.approx(0, abs=1e-6)  # the full student itself
    assert r.best.distances["dssim"] == pytest.approx(1 - r.best.distances["ssim"])
    assert r.best.distances["dssim"] <= r.uniform.distances["dssim"]
    assert r.history == sorted(r.history, reverse=True) and r.history[-1] == r.best.distances["dssim"]


def test_a_budget_below_the_smallest_sub_network_fails_before_searching(
    tiny_student, tiny_teacher, lpips, monkeypatch
):
    import pipeline.stages.search as search

    monkeypatch.setattr(search, "Evaluator", lambda *a: pytest.fail("evaluated before checking"))
    with pytest.raises(ParamsError, match=r"search.budgets.tiny: '1K' = 1,000 MACs is below"):
        search_all(tiny_student, tiny_teacher, lpips, search_cfg(budgets={"ok": 0.5, "tiny": "1K"}),
                   torch.device("cpu"), progress=False)


def test_a_budget_above_the_full_network_is_reported_as_trivially_satisfied(
    tiny_student, tiny_teacher, lpips
):
    _, full, (r,) = search_all(tiny_student, tiny_teacher, lpips, search_cfg(budgets={"all": 1.0}),
                               torch.device("cpu"), progress=False)
    assert r.trivial and r.best.candidate == full.candidate and r.best.distances[LP] == 0


@pytest.mark.parametrize("value, expected", [
    ("15G", 15 * 10**9), ("300M", 300 * 10**6), ("2.5e9", 2_500_000_000), (123456, 123456),
    (0.5, 0.5), ("40%", 0.4), (1, 1.0),
])
def test_budgets_parse(value, expected):
    assert parse_macs(value) == expected


@pytest.mark.parametrize("budgets, match", [
    ({"a": "lots"}, "search.budgets.a: expected a MAC count"),
    ({"a": "150%"}, r"fraction of the full student must be in \(0, 1\]"),
    ({"a": 0}, "must be positive"),
    ({"a/b": 0.5}, "budget name"),
    ({}, "at least 1"),
])
def test_bad_budgets_name_the_key(budgets, match):
    with pytest.raises(ParamsError, match=match) as e:
        parse_params({**tiny_params(), "search": tiny_search(budgets=budgets)})
    assert "search.budgets" in str(e.value)


def test_the_stage_writes_configs_metrics_plots_and_logs_to_mlflow(
    tiny_student, tiny_teacher, tmp_path, mlflow_uri
):
    save_teacher(tiny_teacher, tmp_path / "teacher.safetensors")
    save_student(tiny_student, tmp_path / "student.safetensors")
    params = {**tiny_params(), "search": tiny_search(budgets={"half": 0.5, "all": 1.0})}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out, plots, metrics = tmp_path / "search", tmp_path / "plots", tmp_path / "search.json"
    cmd = [sys.executable, "-m", "components.search", "--no-progress",
           "--params", str(tmp_path / "params.yaml"), "--student", str(tmp_path / "student.safetensors"),
           "--teacher", str(tmp_path / "teacher.safetensors"), "--out", str(out),
           "--plots", str(plots), "--metrics", str(metrics)]
    env = env_with_venv(MLFLOW_TRACKING_URI=mlflow_uri, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    m = json.loads(metrics.read_text())
    for name in ("half", "all"):  # the contract
        assert {"budget_macs", "macs", "lpips_alex_randinit", "uniform_macs",
                "uniform_lpips_alex_randinit", "lpips_alex_randinit_teacher"} <= set(m["budgets"][name])
        assert not any(k.startswith("lpips") and "alex" not in k for k in m["budgets"][name])
    assert m["budgets"]["all"]["trivial"] == 1 and m["budgets"]["half"]["trivial"] == 0
    configs = json.loads((out / "configs.json").read_text())
    half = configs["budgets"]["half"]
    assert len(half["channels"]) == len(tiny_student.cfg.full_widths)
    assert half["macs"] <= half["budget_macs"] and "uniform" in half
    assert (out / "pareto.png").stat().st_size > 10_000
    assert "searched" in (plots / "pareto.csv").read_text()

    client = mlflow.MlflowClient(mlflow_uri)
    (run,) = [r for r in mlflow.search_runs(experiment_names=["stylegan-mobile"], output_format="list")
              if r.data.tags.get("stage") == "search"]
    assert run.data.tags["stand_in_weights"] == "true"
    assert "budgets.half.lpips_alex_randinit" in run.data.metrics
    assert run.data.metrics["seconds"] == m["seconds"] > 0  # every stage reports its cost
    assert run.data.metrics["peak_rss_gb"] == m["peak_rss_gb"] > 0.1
    assert "search: 2 budget(s) x at most" in proc.stderr  # the estimate before the work
    history = client.get_metric_history(run.info.run_id, "best_fitness/half")
    assert [h.step for h in history] == list(range(params["search"]["evolution"]["generations"]))
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "search")}
    assert {"search/configs.json", "search/pareto.png", "search/search.json"} <= logged

    # a budget below the smallest sub-network: exit 2, one line naming the key, outputs kept
    params["search"]["budgets"] = {"tiny": "10"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "search.budgets.tiny" in proc.stderr
    assert json.loads((out / "configs.json").read_text()) == configs


def test_latents_too_large_to_keep_are_scored_the_same(tiny_student, tiny_teacher, lpips,
                                                       monkeypatch):
    """At high resolutions the fixed latents are drawn again per candidate and the full
    student's images recomputed, not held: the same figures, bounded memory."""
    from pipeline.metrics import fixed_latents
    from pipeline.models.elastic import uniform_widths
    from pipeline.stages.search import Candidate, Evaluator

    cfg = parse_params({**tiny_params(), "search": tiny_search()}).search
    half = Candidate(tuple(uniform_widths(tiny_student.cfg, 0.5)), 16)
    kept = Evaluator(tiny_student, tiny_teacher, lpips, cfg, torch.device("cpu"))
    monkeypatch.setattr(fixed_latents, "KEEP_BYTES", 0)
    drawn = Evaluator(tiny_student, tiny_teacher, lpips, cfg, torch.device("cpu"))
    assert kept.latents.keep and not drawn.latents.keep and not isinstance(drawn.full, list)
    for c in (half, Candidate(tuple(tiny_student.cfg.full_widths), 32)):
        assert drawn(c) == pytest.approx(kept(c), rel=1e-5, abs=1e-6)


def test_uptorgb_students_are_searched_with_their_own_cost(tiny_teacher, lpips):
    """BlazeStyleGAN's UpToRGB heads: counted as what they are (pipeline.cost), searched."""
    from pipeline.cost import count_student

    cfg = StudentConfig.from_teacher(tiny_teacher.cfg.channels, 32, tiny_teacher.cfg.style_dim,
                                     head="uptorgb")
    student = MobileSynthesis(cfg).eval()
    space, full, (r,) = search_all(student, tiny_teacher, lpips, search_cfg(min_resolution=16),
                                   torch.device("cpu"), progress=False)
    assert full.macs == count_student(cfg)["macs"] != count_student(
        cfg.model_copy(update={"head": "wavelet"}))["macs"]
    assert r.best.macs <= r.budget_macs and r.best.distances[LP] <= r.uniform.distances[LP]
