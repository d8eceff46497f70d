"""Each format's file, run in that format's own runtime, reproduces the PyTorch student."""

from __future__ import annotations

import importlib

import pytest
import torch

from pipeline.export import formats
from pipeline.export.graph import build, reference


def check(model, student, teacher, fmt, fp16, tmp_path) -> float:
    path = tmp_path / f"{model.kind}{'.fp16' if fp16 else ''}{formats.SUFFIX[fmt]}"
    formats.export(fmt, model, path, fp16, opset=18)
    x = torch.randn(model.input_shape(2), generator=torch.Generator().manual_seed(3))
    got = formats.RUNNERS[fmt](path, x.half() if fp16 else x).float()
    assert got.dtype == torch.float32 and got.shape == (2, 3, model.resolution, model.resolution)
    return float((got - reference(student, teacher, model.kind, x)).abs().max())


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_the_full_student_runs_the_same_in_its_runtime(tiny_teacher, tiny_student, tmp_path, fmt):
    model = build(tiny_student, tiny_teacher, "w")
    assert check(model, tiny_student, tiny_teacher, fmt, False, tmp_path) < 1e-4
    assert check(model, tiny_student, tiny_teacher, fmt, True, tmp_path) < 2e-2  # float16


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
def test_a_sliced_subnetwork_runs_the_same_in_its_runtime(tiny_teacher, tiny_student, tmp_path,
                                                           fmt):
    elastic = pytest.importorskip("pipeline.models.elastic")
    sub = elastic.subnet(tiny_student, [8, 8, 8, 8], 16).eval()
    model = build(sub, tiny_teacher, "wplus")
    assert model.resolution == 16
    assert check(model, sub, tiny_teacher, fmt, False, tmp_path) < 1e-4


@pytest.mark.parametrize("fmt", ["onnx", "pte"])
@pytest.mark.parametrize("demodulation", ["fused", "exact"])
@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
def test_each_formats_graph_matches_the_training_network_at_batch_1_and_4(tiny_teacher, tmp_path,
                                                                         fmt, demodulation, head):
    from pipeline.models.elastic import subnet

    from .conftest import make_student

    student = make_student(tiny_teacher, demodulation, head)
    for net in (student, subnet(student, [12, 12, 8, 8], 16).eval()):  # 3 and 2 channels per level
        path = tmp_path / f"{net.cfg.resolution}{formats.SUFFIX[fmt]}"
        formats.export(fmt, build(net, tiny_teacher, "wplus"), path, False, opset=18)
        for batch in (1, 4):
            x = torch.randn(batch, tiny_teacher.cfg.n_latent, tiny_teacher.cfg.style_dim,
                            generator=torch.Generator().manual_seed(batch))
            got = formats.RUNNERS[fmt](path, x)
            assert (got - reference(net, tiny_teacher, "wplus", x)).abs().max() < 1e-4


def test_the_z_variant_carries_the_mapping_network(tiny_teacher, tiny_student, tmp_path):
    model = build(tiny_student, tiny_teacher, "z", truncation_psi=0.5)
    path = tmp_path / "z.onnx"
    formats.export_onnx(model, path, False, 18)
    z = torch.randn(3, tiny_teacher.cfg.style_dim)
    want = reference(tiny_student, tiny_teacher, "z", z, truncation_psi=0.5)
    assert (formats.run_onnx(path, z) - want).abs().max() < 1e-4
    # chunked, as the parity check runs it at high resolutions: the same images
    assert torch.allclose(formats.run_onnx(path, z, batch=2), formats.run_onnx(path, z), atol=1e-6)


def test_the_onnx_file_up_samples_with_one_conv_transpose_per_level(tiny_teacher, tiny_student,
                                                                    tmp_path):
    onnx = pytest.importorskip("onnx")
    formats.export_onnx(build(tiny_student, tiny_teacher, "w"), tmp_path / "w.onnx", False, 18)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "w.onnx")).graph.node]
    assert ops.count("ConvTranspose") == len(tiny_student.levels)
    assert ops.count("DepthToSpace") == 1  # the last head's IDWT alone


def test_the_pte_file_runs_in_the_xnnpack_delegate(tiny_teacher, tiny_student, tmp_path):
    facts = formats.export_pte(build(tiny_student, tiny_teacher, "wplus"), tmp_path / "m.pte", False)
    assert facts["delegate_calls"] >= 1
    # the whole network runs inside XNNPACK, W+ slicing included
    assert facts["ops_outside_delegate"] == [] and facts["delegate_calls"] == 1


def test_the_core_ml_package_is_a_validated_ml_program(tiny_teacher, tiny_student, tmp_path):
    model = build(tiny_student, tiny_teacher, "wplus")
    facts = formats.export_coreml(model, tmp_path / "m.mlpackage", fp16=True)
    assert (tmp_path / "m.mlpackage" / "Manifest.json").is_file()
    assert facts["ml_program_ops"] > 10 and facts["predicted"] is False
    assert "Apple" in facts["note"]


def test_a_format_whose_packages_do_not_import_says_which(monkeypatch):
    real = importlib.import_module

    def fake(name, *args):
        if name.startswith("coremltools"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", fake)
    assert "coremltools" in formats.unavailable("coreml")
    assert formats.unavailable("onnx") is None
