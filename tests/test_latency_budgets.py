"""Latency budgets in the search stage (pipeline.bench.latency, pipeline.stages.search):
budget strings, the per-layer table and its cache, the model's check, and a latency budget
honoured end to end on a tiny student. Timing is never asserted tightly: the machine is
shared. Costs (2 cores, ~35 s in all): the ExecuTorch layer split ~12 s (the process's first
lowering), the CLI table ~5 s, the layer keys ~4 s (first graph builds), the end-to-end
search ~3 s, the tiny student's ONNX Runtime model ~1.5 s (built once per module, then
cached), the rest well under a second each."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from pipeline.bench import latency as lat
from pipeline.bench.runtimes import RUNTIMES
from pipeline.errors import ParamsError, PipelineError
from pipeline.metrics.perceptual import LPIPS
from pipeline.models.mobile import MobileSynthesis, StudentConfig, calibrate_demodulation
from pipeline.models.sampling import teacher_targets
from pipeline.params import LATENCY_RUNTIMES, LatencyBudget, parse_budget, parse_params
from pipeline.stages.search import Space, search_all, write_outputs
from tests.conftest import TINY, tiny_params, tiny_search

LP = "lpips_alex_randinit"
RATIOS = [0.25, 0.5, 0.75, 1.0]
SETTINGS = {"grid": 2, "holdout": 3, "repeats": 5}


@pytest.fixture(scope="module")
def student():
    """A tiny skip student (untrained, calibrated) and its teacher."""
    from pipeline.models.stylegan2 import StyleGAN2Config, random_generator

    tiny_cfg = StyleGAN2Config.config_f(**TINY)
    teacher = random_generator(tiny_cfg, 0)
    cfg = StudentConfig.from_teacher(tiny_cfg.channels, 32, tiny_cfg.style_dim)
    s = MobileSynthesis(cfg.model_copy(update={"skip": True}))
    t = teacher_targets(teacher, 8, 1.0, 0.0, torch.Generator().manual_seed(0), torch.device("cpu"))
    calibrate_demodulation(s, [(t.wplus, t.noise)])
    return s.eval(), teacher


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("latency-cache")


def search_cfg(budgets, **latency):
    return parse_params({**tiny_params(), "search": tiny_search(
        budgets=budgets, ratios=RATIOS, min_resolution=16, latency={**SETTINGS, **latency})}).search


def onnx_model(student, cache) -> lat.LatencyModel:
    """The tiny student's ONNX Runtime model, measured once per module (then cached)."""
    cfg = student[0].cfg
    space = Space(cfg, RATIOS, 16)
    key = lat.cache_key(cfg, space.choices, space.resolutions, "onnxruntime", "fp32", 1, 2, 3, 5, 0)
    return lat.cached_model(cache, key, lambda: lat.build_model(
        cfg, space.choices, space.resolutions, "onnxruntime", 1, 2, 3, 5, 0))[0]


# -- budget strings ----------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [
    ("8ms@executorch", LatencyBudget(8.0, "executorch")),
    ("1.5ms@onnxruntime", LatencyBudget(1.5, "onnxruntime")),
    ("6ms@executorch-int8", LatencyBudget(6.0, "executorch", "int8")),
    (" 20 ms @ onnxruntime ", LatencyBudget(20.0, "onnxruntime")),
    ("15G", 15 * 10**9), (0.5, 0.5),
])
def test_latency_and_mac_budgets_parse(value, expected):
    assert parse_budget(value) == expected


@pytest.mark.parametrize("value, match", [
    ("8ms@tflite", "unknown runtime 'tflite'"),
    ("8s@executorch", "expected a latency budget like 8ms@executorch"),
    ("ms@onnxruntime", "expected a latency budget"),
    ("0ms@onnxruntime", "must be positive"),
    ("8ms@executorch-int4", "expected a latency budget"),
])
def test_malformed_latency_budgets_fail_validation_naming_the_key(value, match):
    with pytest.raises(ParamsError, match=match) as e:
        parse_params({**tiny_params(), "search": tiny_search(budgets={"fast": value})})
    assert "search.budgets.fast:" in str(e.value)


def test_latency_runtimes_are_pipeline_bench_runtimes():
    assert set(LATENCY_RUNTIMES) <= set(RUNTIMES) and set(lat.RUNTIMES) == set(LATENCY_RUNTIMES)


# -- the table: layers, keys, cache -----------------------------------------------------
@pytest.mark.parametrize("skip", [True, False])
def test_the_table_has_a_key_per_layer_of_the_inference_graph(student, skip):
    from pipeline.bench.targets import prepare
    from pipeline.models.elastic import subnet

    s, teacher = student
    s = MobileSynthesis(s.cfg.model_copy(update={"skip": skip}))
    widths = [8, 16, 24, 8, 16, 32]
    for res in (16, 32):
        syn = prepare(subnet(s, widths, res), teacher, check=False).net.synthesis
        keys = lat.layers_of(skip, widths, res)
        assert len(keys) == len(syn.layers) + len(syn.heads)
        assert [k.kind for k in keys if k.kind != "head"] == (
            ["input"] + ["up", "conv1", "conv2"] * (len(syn.layers) // 3))
        assert keys[0] == lat.LayerKey("input", 8, 16, 4)


def test_cache_keys_change_with_architecture_threads_and_versions(student, monkeypatch):
    s, _ = student
    space = Space(s.cfg, RATIOS, 16)

    from pipeline.bench import measurements

    def key(cfg=s.cfg, threads=1, choices=space.choices):
        return measurements.path_of(Path("c"), lat.cache_key(cfg, choices, [16, 32], "executorch",
                                                              "fp32", threads, 3, 4, 10, 0))

    base = key()
    assert key() == base and base.name.startswith("latency-executorch-fp32-")
    assert key(threads=2) != base
    assert key(cfg=s.cfg.model_copy(update={"head": "uptorgb"})) != base
    assert key(choices=[c[1:] for c in space.choices]) != base
    info = measurements.machine_info()
    monkeypatch.setattr(measurements, "machine_info", lambda: {**info, "onnxruntime": "0.0.1"})
    assert key() != base
    monkeypatch.setattr(measurements, "machine_info", lambda: info)
    assert key() == base
    monkeypatch.setattr(measurements, "code_digest", lambda *modules: "edited")  # the measured code
    assert key() != base


def test_a_corrupt_or_foreign_cache_entry_is_rebuilt(student, cache):
    from pipeline.bench import measurements

    model = onnx_model(student, cache)
    key = {"kind": "latency-onnxruntime-fp32", "test": "corrupt", "machine": {}, "versions": {},
           "code": "c"}
    path = measurements.path_of(cache, key)
    builds = []

    def build():
        builds.append(1)
        return model

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('{"version": 1, "entr')  # a killed writer's half file
    assert lat.cached_model(cache, key, build)[1]["cached"] is False and len(builds) == 1
    again, made = lat.cached_model(cache, key, build)
    assert made["cached"] is True and len(builds) == 1 and again.entries == model.entries
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "key": {**key, "test": "other"}}))
    assert lat.cached_model(cache, key, build)[1]["cached"] is False and len(builds) == 2
    data = json.loads(path.read_text())  # the right key, but not a table: measured again
    path.write_text(json.dumps({**data, "result": {"version": lat.VERSION}}))
    assert lat.cached_model(cache, key, build)[1]["cached"] is False and len(builds) == 3


# -- the model: predicted vs measured -----------------------------------------------------
def test_the_model_predicts_measured_latency_of_held_out_configurations(student, cache):
    model = onnx_model(student, cache)
    space = Space(student[0].cfg, RATIOS, 16)
    # every layer of every choosable configuration is covered (grid 2: ends, interpolated)
    lat.check_table(model, student[0].cfg, space.choices, space.resolutions, "onnxruntime",
                    "fp32", "here")
    assert len(model.check["configs"]) == 3 and model.fit["b"] > 0
    assert model.check["median_abs_err"] < 0.5  # loose: a shared machine; the stage reports it
    space.latency = {"onnxruntime": model}
    assert space.latency_ms(space.smallest, "onnxruntime") < space.latency_ms(space.full, "onnxruntime")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_executorch_layer_times_split_by_layer(student, precision):
    """ETDump's operators are attributed to layers, with int8's quantize / dequantize
    operators too."""
    if lat.check_installed("executorch", precision):
        pytest.skip(f"executorch ({precision}) is not installed")
    layers = lat.micro_layers(student[0].cfg, [[8, 16]] * 6, [32])
    conv2 = [layer for layer in layers.values() if layer.key.kind == "conv2"]
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        times = lat.executorch_layers(conv2, student[0].cfg.style_dim, 1, 3, Path(tmp), precision)
    assert set(times) == {layer.key for layer in conv2} and sum(times.values()) > 0  # ETDump: whole µs


# -- loaded tables --------------------------------------------------------------------------
def test_a_foreign_or_incomplete_table_fails_before_the_search(student, cache, tmp_path, monkeypatch):
    import pipeline.stages.search as search

    model = onnx_model(student, cache)
    monkeypatch.setattr(search, "Evaluator", lambda *a: pytest.fail("evaluated before checking"))
    foreign = model.to_json()
    foreign["arch"] = {**foreign["arch"], "full_widths": [64] * 6, "resolution": 64}
    (tmp_path / "foreign.json").write_text(json.dumps(foreign))
    cfg = search_cfg({"fast": "1ms@onnxruntime"}, tables={"onnxruntime": str(tmp_path / "foreign.json")})
    with pytest.raises(PipelineError, match=r"search.latency.tables.onnxruntime: .*another student.*"
                       r"resolution 64 \(this student: 32\)"):
        search_all(*student, None, cfg, torch.device("cpu"), progress=False)
    incomplete = model.to_json()
    incomplete["entries"] = {k: v for k, v in incomplete["entries"].items() if "/32/" not in k}
    (tmp_path / "incomplete.json").write_text(json.dumps(incomplete))
    cfg = search_cfg({"fast": "1ms@onnxruntime"}, tables={"onnxruntime": str(tmp_path / "incomplete.json")})
    with pytest.raises(PipelineError, match=r"search.latency.tables.onnxruntime: the table has no "
                       r"entries around \d+ layer"):
        search_all(*student, None, cfg, torch.device("cpu"), progress=False)
    (tmp_path / "junk.json").write_text("[]")
    cfg = search_cfg({"fast": "1ms@onnxruntime"}, tables={"onnxruntime": str(tmp_path / "junk.json")})
    with pytest.raises(PipelineError, match="is not a latency table"):
        search_all(*student, None, cfg, torch.device("cpu"), progress=False)


def test_bad_latency_budgets_fail_before_the_search(student, cache, monkeypatch):
    import pipeline.export.formats as formats
    import pipeline.stages.search as search

    monkeypatch.setattr(search, "Evaluator", lambda *a: pytest.fail("evaluated before checking"))
    model = onnx_model(student, cache)
    space = Space(student[0].cfg, RATIOS, 16)
    space.latency = {"onnxruntime": model}
    least = space.latency_ms(space.smallest, "onnxruntime")
    with pytest.raises(ParamsError, match=rf"search.budgets.tiny: '0.0001ms@onnxruntime' is below "
                       rf"the smallest sub-network's predicted latency in onnxruntime \({least:.3f} ms"):
        search_all(*student, None, search_cfg({"ok": 0.5, "tiny": "0.0001ms@onnxruntime"}),
                   torch.device("cpu"), progress=False, cache_dir=cache)
    import pipeline.export.quantize as quantize

    monkeypatch.setattr(quantize, "first_unusable", lambda mods, what: f"{what}: no quantizer here")
    with pytest.raises(ParamsError, match=r"search.budgets.q: onnxruntime-int8 cannot run here "
                       r"\(int8 onnx: no quantizer here\)"):
        search_all(*student, None, search_cfg({"q": "1ms@onnxruntime-int8"}), torch.device("cpu"),
                   progress=False, cache_dir=cache)
    real = formats.unavailable
    monkeypatch.setattr(formats, "unavailable", lambda f: "pte: executorch is not usable here"
                        if f == "pte" else real(f))
    with pytest.raises(ParamsError, match="search.budgets.et: executorch cannot run here"):
        search_all(*student, None, search_cfg({"et": "1ms@executorch"}), torch.device("cpu"),
                   progress=False, cache_dir=cache)


# -- end to end ---------------------------------------------------------------------------------
def test_a_latency_budget_is_honoured_end_to_end(student, cache, tmp_path):
    model = onnx_model(student, cache)
    space = Space(student[0].cfg, RATIOS, 16)
    space.latency = {"onnxruntime": model}
    small, full = (space.latency_ms(c, "onnxruntime") for c in (space.smallest, space.full))
    budget = round(small + 0.4 * (full - small), 4)
    cfg = search_cfg({"fast": f"{budget}ms@onnxruntime", "half": 0.5})
    lpips = LPIPS("alex", None, stand_in=True)
    space, full_s, results = search_all(*student, lpips, cfg, torch.device("cpu"), progress=False,
                                        cache_dir=cache)
    fast, half = results
    assert fast.budget.latency == LatencyBudget(budget, "onnxruntime") and half.budget_macs
    assert all(space.latency_ms(s.candidate, "onnxruntime") <= budget for s in fast.evaluated)
    assert fast.best.distances[LP] <= fast.uniform.distances[LP]
    # the uniform baseline stays on the search's choices, where the model was checked
    assert fast.uniform_ratio in RATIOS and all(
        w in ch for w, ch in zip(fast.uniform.candidate.widths, space.choices, strict=True))
    assert fast.macs_search and fast.macs_search.budget.limit == fast.uniform.macs
    predicted = space.latency_ms(fast.best.candidate, "onnxruntime")
    assert 0.3 * predicted < fast.measured.best_ms < 3 * predicted  # loose: timing on a shared machine
    metrics = write_outputs(space, full_s, results, cfg, lpips, tmp_path / "out", tmp_path / "plots", "0")
    m = metrics["budgets"]["fast"]
    assert m["budget_ms"] == budget and m["runtime"] == "onnxruntime"
    assert m["within_budget"] == int(m["latency_ms_measured"] <= budget)
    assert m["latency_ms_predicted"] == pytest.approx(predicted) and m["fitness"] == fast.best.distances[LP]
    assert m["macs_search_fitness"] == fast.macs_search.best.distances[LP]
    assert set(metrics["latency_model"]["onnxruntime"]) >= {"median_abs_err", "max_abs_err"}
    assert "budget_macs" in metrics["budgets"]["half"] and "budget_ms" not in metrics["budgets"]["half"]
    configs = json.loads((tmp_path / "out" / "configs.json").read_text())
    assert configs["budgets"]["fast"]["channels"] == list(fast.best.candidate.widths)
    assert (tmp_path / "out" / "pareto_latency_onnxruntime.png").stat().st_size > 0
    import csv

    rows = list(csv.DictReader((tmp_path / "out" / "latency.csv").open()))
    assert [r["kind"] for r in rows] == ["holdout"] * 3 + ["searched", "uniform", "macs_search"]
    searched = rows[3]
    assert float(searched["measured_ms"]) == fast.measured.best_ms
    assert searched["channels"] == " ".join(map(str, fast.best.candidate.widths))
    assert float(searched["predicted_ms"]) == pytest.approx(predicted) and rows[5]["measured_ms"] == ""


def test_an_int8_latency_budget_is_predicted_and_measured_with_int8_files(student, cache, tmp_path):
    """``ms@onnxruntime-int8``: a table of QDQ layers, the chosen configuration quantized
    and timed as the export stage's int8 file is."""
    if lat.check_installed("onnxruntime", "int8"):
        pytest.skip("onnxruntime's quantizer is not installed")
    cfg = search_cfg({"q": "100ms@onnxruntime-int8"})  # loose: the search's mechanics, not timing
    lpips = LPIPS("alex", None, stand_in=True)
    space, full_s, results = search_all(*student, lpips, cfg, torch.device("cpu"), progress=False,
                                        cache_dir=cache)
    model = space.latency["onnxruntime-int8"]
    assert model.precision == "int8" and model.runtime == "onnxruntime" and model.fit["b"] > 0
    assert list(cache.glob("latency-onnxruntime-int8-*.json"))
    (q,) = results
    assert q.budget.latency == LatencyBudget(100.0, "onnxruntime", "int8") and q.measured.best_ms > 0
    m = write_outputs(space, full_s, results, cfg, lpips, tmp_path / "out", tmp_path / "plots", "0")
    assert m["budgets"]["q"]["precision"] == "int8" and m["budgets"]["q"]["within_budget"] == 1
    assert set(m["latency_model"]) == {"onnxruntime-int8"}
    assert (tmp_path / "out" / "pareto_latency_onnxruntime-int8.png").stat().st_size > 0


def test_a_table_measured_with_the_cli_is_what_the_search_predicts_with(student, tmp_path):
    from pipeline.bench.cli import main
    from pipeline.checkpoints.project import save_student
    from pipeline.stages.search import latency_models

    save_student(student[0], tmp_path / "student.safetensors")
    table = tmp_path / "table.json"
    assert main(["latency-table", "--student", str(tmp_path / "student.safetensors"), "--runtime",
                 "onnxruntime", "--out", str(table), "--ratios", ",".join(map(str, RATIOS)),
                 "--min-resolution", "16", "--holdout", "2", "--repeats", "3"]) == 0
    cfg = search_cfg({"fast": "1ms@onnxruntime"}, tables={"onnxruntime": str(table)})
    models = latency_models(Space(student[0].cfg, RATIOS, 16), cfg.latency, cfg.budgets, None)
    assert models["onnxruntime"].entries == json.loads(table.read_text())["entries"]
    assert main(["latency-table", "--student", str(tmp_path / "student.safetensors"), "--runtime",
                 "onnxruntime", "--out", str(table), "--ratios", "2"]) == 2
