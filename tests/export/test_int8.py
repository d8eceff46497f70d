"""int8 variants in the export stage: quantized, measured against their fp32 files, gated;
and the calibration sets and runtimes that cannot give one."""

from __future__ import annotations

import json

import pytest
import torch

from pipeline.export.quantize import CalibrationError, check_calibration, latent_inputs
from tests.export.test_stage import export_params, run

INT8 = {"formats": ["onnx", "pte"], "calibration_samples": 8, "eval_samples": 4, "repeats": 3,
        "seconds": 0}


def test_every_model_gets_int8_files_measured_against_its_fp32_files(workdir, export_files):
    params = export_params(formats=["onnx", "pte"], inputs=["w", "z"], int8=INT8,
                           registry={"enabled": False})
    assert run(workdir, export_files, params) == 0
    folder = workdir / "export" / "full"
    names = {p.name for p in folder.iterdir()}
    assert {"w.int8.onnx", "w.int8.pte"} <= names and not any("z.int8" in n for n in names)
    m = json.loads((workdir / "metrics.json").read_text())["models"]["full"]
    for fmt in ("onnx", "pte"):
        assert 0 <= m[f"{fmt}_int8_lpips"] <= m[f"{fmt}_int8_lpips_max"] < 0.05
        assert 25 < m[f"{fmt}_int8_psnr_min"] <= m[f"{fmt}_int8_psnr"] < 100  # close, not identical
        assert m[f"{fmt}_int8_speedup"] > 0 and m[f"{fmt}_int8_published"] == 1
        assert m[f"{fmt}_int8_bytes"] == (folder / f"w.int8.{fmt}").stat().st_size
    card = json.loads((folder / "card.json").read_text())
    int8 = {a["path"]: a for a in card["artifacts"] if a["precision"] == "int8"}
    assert set(int8) == {"w.int8.onnx", "w.int8.pte"}
    assert int8["w.int8.pte"]["ops_outside_delegate"] == []  # XNNPACK runs all of it
    assert "QDQ" in int8["w.int8.onnx"]["quantization"]
    assert "## int8" in (folder / "card.md").read_text()


def test_an_int8_file_over_the_gate_is_not_published_and_the_fp32_files_are(
        workdir, export_files, caplog):
    params = export_params(formats=["onnx"], inputs=["w"], int8={**INT8, "max_lpips": 1e-9},
                           registry={"enabled": False})
    assert run(workdir, export_files, params) == 0
    names = {p.name for p in (workdir / "export" / "full").iterdir()}
    assert "w.onnx" in names and "w.int8.onnx" not in names
    m = json.loads((workdir / "metrics.json").read_text())["models"]["full"]
    assert m["onnx_int8_published"] == 0 and m["onnx_int8_lpips"] > 1e-9
    assert "full/w.int8.onnx not published" in caplog.text and "max_lpips" in caplog.text
    assert "min_psnr" not in caplog.text  # the LPIPS gate alone failed it
    card = json.loads((workdir / "export" / "full" / "card.json").read_text())
    assert "w.int8.onnx" not in {f["path"] for f in card["files"]}


def test_the_weight_free_psnr_gate_refuses_too(workdir, export_files, caplog):
    params = export_params(formats=["onnx"], inputs=["w"], int8={**INT8, "min_psnr": 99.0},
                           registry={"enabled": False})
    assert run(workdir, export_files, params) == 0
    assert "w.int8.onnx" not in {p.name for p in (workdir / "export" / "full").iterdir()}
    assert "median PSNR" in caplog.text and "export.int8.min_psnr 99 by" in caplog.text
    m = json.loads((workdir / "metrics.json").read_text())["models"]["full"]
    assert m["onnx_int8_published"] == 0 and "pte_int8_published" not in m  # pte: not asked for


def test_a_degenerate_calibration_set_fails_before_any_export(workdir, export_files, capsys):
    params = export_params(formats=["onnx"], inputs=["w"], int8={**INT8, "truncation_psi": 0.0})
    assert run(workdir, export_files, params) == 2
    err = capsys.readouterr().err
    assert "export.int8" in err and "calibration inputs are the same" in err
    assert not (workdir / "export").exists()


def test_an_empty_calibration_set_is_refused_by_params(workdir, export_files, capsys):
    assert run(workdir, export_files, export_params(int8={"calibration_samples": 0})) == 2
    assert "export.int8.calibration_samples" in capsys.readouterr().err


def test_int8_that_cannot_be_produced_here_is_said_and_the_rest_is_produced(
        workdir, export_files, monkeypatch):
    from pipeline.stages import export as stage

    monkeypatch.setattr(stage, "int8_unavailable", lambda fmt: "int8 pte: torchao is not usable "
                        "here" if fmt == "pte" else None)
    params = export_params(formats=["onnx", "pte"], inputs=["w"], int8=INT8, registry={"enabled": False})
    assert run(workdir, export_files, params) == 0
    names = {p.name for p in (workdir / "export" / "full").iterdir()}
    assert {"w.onnx", "w.pte", "w.int8.onnx"} <= names and "w.int8.pte" not in names
    card = json.loads((workdir / "export" / "full" / "card.json").read_text())
    assert "torchao" in card["formats_skipped"]["pte-int8"]


def test_calibration_inputs_come_from_the_mapping_network_and_bad_sets_are_named(tiny_teacher):
    x = latent_inputs(tiny_teacher, 6, 0, 0.7)
    assert x["wplus"].shape == (6, tiny_teacher.cfg.n_latent, tiny_teacher.cfg.style_dim)
    assert torch.equal(x["wplus"][:, 0], x["w"])  # the first half of W+ is w itself
    check_calibration(x["w"], "ok")
    for bad, why in [(x["w"][:1], "at least 2"), (x["w"][:1].expand(4, -1), "are the same"),
                     (torch.full((3, 4), float("nan")), "not all finite")]:
        with pytest.raises(CalibrationError, match=why):
            check_calibration(bad, "export.int8")
