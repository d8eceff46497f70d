"""The latency benchmark (pipeline.bench): sane and ordered figures, every runtime runs the
very network PyTorch runs, the teacher/student ratio, the CLI. Timed assertions compare
figures measured in the same run (never absolute times); one thread, so that a busy
machine's scheduling does not stall a thread pool."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from pipeline import bench
from pipeline.models.mobile import MobileSynthesis, StudentConfig
from pipeline.models.stylegan2 import Generator

from .conftest import ENV_BIN, REPO
from .export.conftest import make_student

FAST = dict(warmup=1, repeats=3, threads=1, peak_n=256)


def tiny_student(teacher: Generator, width: int) -> MobileSynthesis:
    cfg = StudentConfig(resolution=teacher.cfg.resolution, style_dim=teacher.cfg.style_dim,
                        channels={r: width for r in (4, 8, 16)})
    return bench.random_student(cfg, seed=0)


def test_the_harness_returns_sane_figures():
    calls = []
    stats = bench.measure(lambda: calls.append(time.sleep(0.001)), warmup=2, repeats=7)
    assert len(calls) == 9 and stats["repeats"] == 7
    assert 0 < stats["min_ms"] <= stats["median_ms"] <= stats["p90_ms"]
    assert stats["min_ms"] <= stats["mean_ms"] and stats["min_ms"] >= 1.0  # slept 1 ms each
    with pytest.raises(bench.BenchError):
        bench.measure(lambda: None, warmup=0, repeats=0)


class LoadedMachine:
    """A fake clock: a call costs its own ms times the machine's load, which doubles after
    the first ``switch`` calls (another job starts): what a busy machine does to a benchmark."""

    def __init__(self, switch: int):
        self.now, self.calls, self.switch = 0.0, 0, switch

    def clock(self) -> float:
        return self.now

    def call(self, ms: float):
        def run():
            self.calls += 1
            self.now += ms / 1e3 * (1 if self.calls <= self.switch else 2)
        return run


@pytest.mark.parametrize("switch", [12, 13])  # between two rounds, inside one
def test_a_load_change_moves_an_interleaved_ratio_less_than_a_sequential_one(switch):
    """Teacher 10 ms, student 1 ms: the true ratio is 10. Timed one after the other, the
    load change lands between them (5x); timed in alternating rounds, each round's two calls
    share a load, and the median round keeps 10x."""
    m = LoadedMachine(switch)
    teacher = bench.measure(m.call(10), warmup=1, repeats=10, clock=m.clock)
    student = bench.measure(m.call(1), warmup=1, repeats=10, clock=m.clock)
    sequential = teacher["median_ms"] / student["median_ms"]
    m = LoadedMachine(switch)
    times = bench.interleave({"teacher": m.call(10), "student": m.call(1)}, warmup=1, repeats=10,
                             clock=m.clock)
    interleaved = bench.round_ratio(times["teacher"], times["student"])
    assert sequential == pytest.approx(5) and interleaved["ratio"] == pytest.approx(10)
    assert abs(interleaved["ratio"] - 10) < abs(sequential - 10)
    assert interleaved["rounds"] == 10
    assert interleaved["p10"] <= interleaved["ratio"] <= interleaved["p90"]


def test_rounds_go_on_until_the_budget_in_seconds_is_spent():
    m = LoadedMachine(switch=10**9)
    times = bench.interleave({"a": m.call(10), "b": m.call(1)}, warmup=2, repeats=3, seconds=0.105,
                             clock=m.clock)
    assert len(times["a"]) == len(times["b"]) == 10  # 11 ms a round
    assert m.calls == 2 * 2 + 2 * 10
    m = LoadedMachine(switch=10**9)
    assert len(bench.interleave({"a": m.call(10)}, 0, 3, seconds=0.001, clock=m.clock)["a"]) == 3  # at least
    with pytest.raises(bench.BenchError):
        bench.round_ratio([1.0, 2.0], [1.0])


def test_the_matmul_peak_is_measured_per_implementation():
    rates = bench.matmul_rates("cpu", threads=1, n=256, warmup=1, repeats=2)
    assert "mm" in rates and all(r > 0 for r in rates.values())
    assert bench.peak_gmacs("cpu", threads=1, n=256, warmup=1, repeats=2) > 0


def test_machine_info_names_the_cpu_cores_and_runtimes():
    info = bench.machine_info()
    assert info["cpu"] and info["logical_cores"] >= info["physical_cores"] >= 1
    assert info["torch_threads"] >= 1 and info["gpu"] is None
    assert info["onnxruntime"] and "CPUExecutionProvider" in info["onnxruntime_providers"]
    assert info["cpu"] in bench.machine_text(info)


def test_each_timing_comes_with_its_rate_and_efficiency_from_the_model_macs(tiny_teacher):
    # No timing is compared here (a loaded CI machine reorders them): only that every figure
    # is the one its definition gives from the measured median.
    torch.set_num_threads(2)  # what the run must give back (under pytest-xdist the fixture sets 1)
    narrow, wide = tiny_student(tiny_teacher, 8), tiny_student(tiny_teacher, 256)
    result = bench.bench({"narrow": narrow, "wide": wide}, ["pytorch", "onnxruntime"], (1, 2),
                         warmup=1, repeats=3, threads=1, peak_n=256, teacher=tiny_teacher)
    info, models = result["model_info"], result["models"]
    assert info["wide"]["macs"] > 20 * info["narrow"]["macs"] > 0
    assert result["threads"] == 1 and result["peak_gmacs"] > 0 and not result["skipped"]
    for rt in ("pytorch", "onnxruntime"):
        for name in ("narrow", "wide"):
            for batch in (1, 2):
                s = models[name][rt][f"batch_{batch}"]
                assert 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"]
                achieved = info[name]["macs"] * batch / (s["median_ms"] / 1e3) / 1e9
                assert s["gmacs_per_s"] == pytest.approx(achieved)
                assert s["efficiency"] == pytest.approx(achieved / result["peak_gmacs"])
    assert len(result["rows"]) == 2 * 2 * 2
    assert torch.get_num_threads() == 2  # restored after the run


def test_onnxruntime_runs_the_benchmarked_graph_and_matches_pytorch(tiny_teacher, tmp_path):
    student = make_student(tiny_teacher)
    result = bench.bench({"teacher": tiny_teacher, "student": student}, ["pytorch", "onnxruntime"],
                         (1,), workdir=tmp_path, teacher=tiny_teacher, **FAST)
    assert not result["skipped"]
    for name in ("teacher", "student"):
        # the timed graph computes the training module's image, and ORT computes the graph's
        assert result["model_info"][name]["graph_max_abs_err"] < 1e-4
        assert result["parity"][name]["onnxruntime"] < 1e-4
        assert (tmp_path / name / f"{name}.onnx").is_file()
    assert result["runtime_devices"]["student"]["onnxruntime"] == "onnxruntime CPU"


def test_the_teacher_graph_equals_the_generator_at_batch_two(tiny_teacher):
    graph = bench.TeacherGraph(tiny_teacher)
    wplus = torch.randn(2, tiny_teacher.cfg.n_latent, tiny_teacher.cfg.style_dim)
    with torch.no_grad():
        want = tiny_teacher.synthesis(wplus, tiny_teacher.make_noise(1, "const"))
        assert (graph(wplus) - want).abs().max() < 1e-4


def test_executorch_runs_the_pte_file_or_says_why_not(tiny_teacher):
    result = bench.bench({"student": make_student(tiny_teacher)}, ["pytorch", "executorch"], (1, 2),
                         teacher=tiny_teacher, **FAST)
    skipped = result["skipped"]
    if "student/executorch" in skipped:
        assert skipped["student/executorch"].strip()
        return
    assert result["models"]["student"]["executorch"]["batch_1"]["median_ms"] > 0
    assert result["parity"]["student"]["executorch"] < 1e-4
    assert "batch 1" in skipped["student/executorch/batch_2"]  # the .pte is exported for batch 1


def test_a_runtime_that_fails_is_recorded_not_raised(tiny_teacher, monkeypatch):
    class Broken:  # its file cannot be written
        @staticmethod
        def write(*args, **kwargs):
            raise RuntimeError("no such provider\nsecond line")

    monkeypatch.setitem(bench._RUNTIME_CLASSES, "onnxruntime", Broken)
    result = bench.bench({"student": make_student(tiny_teacher)}, ["pytorch", "onnxruntime"], (1,),
                         teacher=tiny_teacher, **FAST)
    assert result["skipped"] == {"student/onnxruntime": "RuntimeError: no such provider"}
    assert result["models"]["student"]["pytorch"]["batch_1"]["median_ms"] > 0


def test_bad_arguments_fail_before_anything_runs(tiny_teacher):
    for kwargs in ({"runtimes": ["tensorrt"]}, {"batch_sizes": [0]}, {"repeats": 0}, {"threads": 0}):
        with pytest.raises(bench.BenchError):
            bench.bench({"t": tiny_teacher}, **{"runtimes": ["pytorch"], **kwargs})
    with pytest.raises(bench.BenchError, match="cannot benchmark"):
        bench.bench({"x": torch.nn.Linear(2, 2)}, ["pytorch"])


def test_the_ratio_has_one_entry_per_runtime_and_the_mac_ratio():
    runtimes = ["pytorch", "onnxruntime", "executorch"]
    out = bench.latency_ratio_1024(runtimes, resolution=32, channel_max=32, style_dim=32, n_mlp=2,
                                   **FAST)
    measured = [rt for rt in runtimes if f"teacher/{rt}" not in out["skipped"]
                and f"student/{rt}" not in out["skipped"]]
    assert {"pytorch", "onnxruntime"} <= set(measured)
    assert sorted(out["latency_ratio"]) == sorted(measured)
    for rt in measured:  # the median of the per-round ratios, its spread around it
        rounds = out["bench"]["rounds"][rt]["batch_1"]
        per_round = [t / s for t, s in zip(rounds["teacher"], rounds["student"], strict=True)]
        assert out["runtimes"][rt]["rounds"] == len(per_round) >= FAST["repeats"]
        assert out["latency_ratio"][rt] == pytest.approx(float(np.median(per_round)))
        assert out["latency_ratio_p10"][rt] <= out["latency_ratio"][rt] <= out["latency_ratio_p90"][rt]
    assert out["weights"] == "random (speed only)" and out["resolution"] == 32
    assert out["mac_ratio"] == pytest.approx(out["teacher_macs"] / out["student_macs"]) and out["mac_ratio"] > 1
    assert out["mac_ratio_mobilestylegan"] == 9.5 and out["threads"] == 1


def test_the_cli_prints_the_table_and_the_ratio(tiny_teacher, tmp_path, capsys):
    from pipeline.checkpoints import save_teacher
    from pipeline.checkpoints.project import save_student

    save_teacher(tiny_teacher, tmp_path / "teacher.safetensors")
    save_student(make_student(tiny_teacher), tmp_path / "student.safetensors")
    code = bench.main(["--teacher", str(tmp_path / "teacher.safetensors"),
                       "--student", str(tmp_path / "student.safetensors"),
                       "--runtimes", "pytorch,onnxruntime", "--batch", "2", "--threads", "1",
                       "--warmup", "1", "--repeats", "3", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert "median ms" in out and "p90 ms" in out and "GMAC/s" in out and "efficiency" in out
    assert "teacher / student latency ratio" in out and "MobileStyleGAN's paper: 9.5x" in out
    assert out.count("onnxruntime") >= 4  # 2 models x 2 batches, and the ratio line
    saved = json.loads((tmp_path / "out.json").read_text())
    assert set(saved["ratio"]["latency_ratio"]) == {"pytorch", "onnxruntime"}
    assert saved["batch_sizes"] == [1, 2] and saved["threads"] == 1


@pytest.mark.parametrize("argv, message", [
    (["--student", "missing.safetensors"], "--student: no such file"),
    (["--config-f", "32", "--runtimes", "pytorch,tensorrt"], "unknown runtime 'tensorrt'"),
    (["--config-f", "33"], "power of two"),
    (["--config-f", "32", "--batch", "x"], "--batch"),
    (["--config-f", "32", "--threads", "1,x"], "--threads"),
    (["--config-f", "32", "--threads", "1,2", "--profile"], "--profile takes one --threads count"),
    ([], "nothing to benchmark"),
])
def test_the_cli_exits_2_with_one_line_on_bad_input(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(bench.main(argv))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_the_module_runs_as_a_script():
    done = subprocess.run([f"{ENV_BIN}/python", "-m", "pipeline.bench", "--runtimes", "nope"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("python -m pipeline.bench: error: unknown runtime")


def test_the_evaluate_stage_entry_point_uses_its_models_costs(tiny_teacher, tmp_path):
    from types import SimpleNamespace

    from pipeline.models.elastic import subnet

    student = make_student(tiny_teacher)
    half = subnet(student, [8, 8, 8, 8], 16)
    models = [SimpleNamespace(name="teacher", module=tiny_teacher, cost={"macs": 1000}),
              SimpleNamespace(name="full", module=student, cost={"macs": 500}),
              SimpleNamespace(name="half", module=half, cost={"macs": 100})]
    # two worker processes write the three models' files, then they are timed here
    cfg = SimpleNamespace(runtimes=["pytorch", "onnxruntime"], batch_sizes=[1], warmup=0, repeats=2,
                          seconds=0, threads=1, workers=2, ratio_1024=False)
    latency, ratio = bench.evaluate_latency(cfg, models, tiny_teacher, tmp_path)
    assert ratio is None and not latency["skipped"]
    assert [row[:3] for row in latency["rows"]] == [
        [m, rt, 1] for m in ("teacher", "full", "half") for rt in ("pytorch", "onnxruntime")]
    assert latency["model_info"]["half"]["macs"] == 100 and latency["model_info"]["half"]["resolution"] == 16
    assert latency["parity"]["half"]["onnxruntime"] < 1e-4
    assert tiny_teacher.conv1.conv.weight.device.type == "cpu"  # the caller's modules untouched


def test_the_cli_measures_each_thread_count_in_one_run(tmp_path, capsys):
    code = bench.main(["--config-f", "16", "--channel-max", "8", "--threads", "1,2", "--runtimes",
                       "pytorch,onnxruntime", "--repeats", "2", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert code == 0 and "same run, 1 threads" in out and "same run, 2 threads" in out
    assert "student at" in out and "% of peak" in out
    saved = json.loads((tmp_path / "out.json").read_text())["by_threads"]
    assert set(saved) == {"1", "2"} and saved["2"]["threads"] == 2
    assert set(saved["1"]["ratio"]["latency_ratio"]) == {"pytorch", "onnxruntime"}


def test_the_evaluate_ratio_is_measured_with_every_thread_count_asked(monkeypatch, tmp_path):
    """The 1024 ratio (shrunk here: 32 px, 32 channels) with the configured threads and
    each of ``ratio_threads``; the headline ratio is the configured count's."""
    from types import SimpleNamespace

    from pipeline.bench import measurements, suite

    real, runs = suite.latency_ratio_1024, []

    def shrunk(runtimes, resolution, *args, **kw):
        runs.append(kw)
        return real(runtimes, 32, *args, channel_max=32, style_dim=32, n_mlp=2, **kw)

    monkeypatch.setattr(suite, "latency_ratio_1024", shrunk)
    cfg = SimpleNamespace(runtimes=["pytorch", "onnxruntime"], batch_sizes=[1], warmup=0, repeats=1,
                          seconds=0, threads=1, workers=1, ratio_1024=True, ratio_repeats=2, ratio_seconds=0,
                          ratio_threads=[2, 1])
    store = tmp_path / "store"
    _, ratio = bench.evaluate_latency(cfg, [], None, tmp_path, measurements=store)
    assert ratio["threads"] == 1 and list(ratio["by_threads"]) == ["1", "2"] and len(runs) == 2
    assert ratio["by_threads"]["1"] == ratio["latency_ratio"]
    assert set(ratio["by_threads"]["2"]) == set(ratio["by_threads_p90"]["2"]) == {"pytorch", "onnxruntime"}
    efficiency = bench.student_efficiency(ratio["bench"])
    assert set(efficiency) == {"pytorch", "onnxruntime"} and all(0 < e < 1 for e in efficiency.values())
    made = ratio["measured"]
    assert made["cached"] is False and made["versions"]["onnxruntime"] and made["machine"]["cpu"]

    # The same code, runtimes and machine: the stored figures, said to be cached, with when and where.
    _, again = bench.evaluate_latency(cfg, [], None, tmp_path, measurements=store)
    assert len(runs) == 2 and again["measured"] == {**made, "cached": True}
    assert again["latency_ratio"] == ratio["latency_ratio"]
    assert "cached: measured " in measurements.describe(again["measured"])
    # Any of them changes: measured again (and stored beside the other entry).
    info = measurements.machine_info()
    monkeypatch.setattr(measurements, "machine_info", lambda: {**info, "onnxruntime": "0.0.1"})
    assert bench.evaluate_latency(cfg, [], None, tmp_path, measurements=store)[1]["measured"]["cached"] is False
    monkeypatch.setattr(measurements, "code_digest", lambda *modules: "edited")
    bench.evaluate_latency(cfg, [], None, tmp_path, measurements=store)
    assert len(runs) == 6 and len(list(store.glob("ratio_1024-*.json"))) == 3


def test_int8_runtimes_time_the_quantized_files_calibrated_on_the_given_styles(
        tiny_teacher, tmp_path, monkeypatch):
    """Int8 rows beside the fp32 ones: each runtime quantizes its own file (export.quantize),
    calibrated on the target's styles; its parity to eager is int8-sized (random weights),
    not zero. The 1024 ratio of the same configuration keeps to the fp32 runtimes."""
    from types import SimpleNamespace

    from pipeline.bench import suite
    from pipeline.export.quantize import latent_inputs

    calibration = latent_inputs(tiny_teacher, 8, 0, 1.0)["wplus"]
    models = [SimpleNamespace(name="full", module=make_student(tiny_teacher), cost={"macs": 500})]
    cfg = SimpleNamespace(runtimes=["pytorch", "onnxruntime", "onnxruntime-int8", "executorch-int8"],
                          batch_sizes=[1], warmup=0, repeats=2, seconds=0, threads=1, workers=1, ratio_1024=False)
    latency, _ = bench.evaluate_latency(cfg, models, tiny_teacher, tmp_path, calibration=calibration)
    assert not latency["skipped"]
    assert [row[1] for row in latency["rows"]] == cfg.runtimes
    for rt in ("onnxruntime-int8", "executorch-int8"):
        assert 1e-5 < latency["parity"]["full"][rt] < 1
    assert (tmp_path / "models" / "full" / "student.int8.onnx").is_file()
    assert "int8" in latency["runtime_devices"]["full"]["onnxruntime-int8"]
    asked = []
    monkeypatch.setattr(suite, "latency_ratio_1024", lambda runtimes, *a, **k: asked.append(
        runtimes) or {"latency_ratio": {}, "latency_ratio_p10": {}, "latency_ratio_p90": {}, "threads": 1,
                     "bench": {"models": {}}})
    cfg.ratio_1024, cfg.ratio_repeats, cfg.ratio_seconds, cfg.ratio_threads = True, 1, 0, []
    cfg.runtimes = cfg.runtimes[1:]
    bench.evaluate_latency(cfg, [], tiny_teacher, tmp_path / "ratio")
    assert asked == [["onnxruntime"]]


def test_the_fp16_runtime_times_the_half_precision_program_beside_fp32(tiny_teacher, tmp_path, monkeypatch):
    """executorch-fp16: the export stage's half-precision .pte, fed the W+ in float16; its
    output is near the fp32 eager image (fp16-sized, not zero), no efficiency against an
    fp32 peak, and the 1024 ratio keeps to the fp32 runtimes."""
    from types import SimpleNamespace

    from pipeline.bench import suite

    models = [SimpleNamespace(name="full", module=make_student(tiny_teacher), cost={"macs": 500})]
    cfg = SimpleNamespace(runtimes=["pytorch", "executorch", "executorch-fp16"], batch_sizes=[1],
                          warmup=0, repeats=2, seconds=0, threads=1, workers=1, ratio_1024=False)
    latency, _ = bench.evaluate_latency(cfg, models, tiny_teacher, tmp_path)
    assert not latency["skipped"]
    assert [row[1] for row in latency["rows"]] == cfg.runtimes
    parity = latency["parity"]["full"]
    assert parity["executorch"] < 1e-4 < parity["executorch-fp16"] < 0.05
    assert (tmp_path / "models" / "full" / "student.fp16.pte").is_file()
    figures = latency["models"]["full"]
    assert figures["executorch-fp16"]["batch_1"]["efficiency"] is None
    assert figures["executorch"]["batch_1"]["efficiency"] > 0
    asked = []
    monkeypatch.setattr(suite, "latency_ratio_1024", lambda runtimes, *a, **k: asked.append(
        runtimes) or {"latency_ratio": {}, "latency_ratio_p10": {}, "latency_ratio_p90": {}, "threads": 1,
                     "bench": {"models": {}}})
    cfg.ratio_1024, cfg.ratio_repeats, cfg.ratio_seconds, cfg.ratio_threads = True, 1, 0, []
    bench.evaluate_latency(cfg, [], tiny_teacher, tmp_path / "ratio")
    assert asked == [["pytorch", "executorch"]]
