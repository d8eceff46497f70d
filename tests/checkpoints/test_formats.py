"""Project (safetensors) and rosinality (.pt) checkpoints: round trips and bad input."""

import argparse
import os
import pickle

import pytest
import torch

from pipeline.checkpoints import detect_format, load_teacher, save_teacher
from pipeline.checkpoints.rosinality import save_rosinality
from pipeline.errors import CheckpointError
from pipeline.models.stylegan2 import StyleGAN2Config, random_generator
from tests.checkpoints.nvidia_writer import save_nvidia_pickle
from tests.conftest import TINY


def same_images(a, b, style_dim):
    z = torch.randn(3, style_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(z, noise_mode="const").image, b(z, noise_mode="const").image)


def test_project_format_round_trips_weights_and_architecture(tmp_path, tiny_teacher):
    path = tmp_path / "t.safetensors"
    save_teacher(tiny_teacher, path, {"source": "random:"})
    loaded = load_teacher(path)
    assert loaded.format == "project" and detect_format(path) == "project"
    assert loaded.generator.cfg == tiny_teacher.cfg
    assert same_images(loaded.generator, tiny_teacher, tiny_teacher.cfg.style_dim)


def test_rosinality_checkpoint_loads_with_inferred_architecture(tmp_path, tiny_teacher):
    path = tmp_path / "550000.pt"
    save_rosinality(tiny_teacher, path)
    ckpt = torch.load(path, weights_only=True)
    # Key names exactly as rosinality/stylegan2-pytorch writes them.
    assert {"style.1.weight", "input.input", "conv1.conv.modulation.bias", "conv1.noise.weight",
            "conv1.activate.bias", "to_rgb1.bias", "convs.0.conv.blur.kernel",
            "to_rgbs.0.upsample.kernel", "noises.noise_0"} <= set(ckpt["g_ema"])
    loaded = load_teacher(path)
    assert loaded.format == "rosinality"
    assert loaded.generator.cfg == tiny_teacher.cfg
    assert same_images(loaded.generator, tiny_teacher, tiny_teacher.cfg.style_dim)


def test_rosinality_training_checkpoint_with_args_namespace_loads(tmp_path, tiny_teacher):
    state = {k: v for k, v in tiny_teacher.state_dict().items() if k != "w_avg"}
    path = tmp_path / "train.pt"
    torch.save({"g": state, "d": {}, "g_ema": state, "args": argparse.Namespace(size=32)}, path)
    loaded = load_teacher(path)
    assert "estimated" in loaded.notes["w_avg"]  # no latent_avg in training checkpoints
    assert torch.allclose(loaded.generator.w_avg, tiny_teacher.w_avg, atol=0.3)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch EXPLOITED",))


def test_pt_file_with_code_in_its_pickle_is_refused_and_nothing_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": _Exploit()}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_teacher(path)
    assert not (tmp_path / "EXPLOITED").exists()


class _Harmless:  # a global torch's weights-only loader does not allow: refused, never built
    pass


@pytest.mark.parametrize("payload", ["os.system", "class"])
@pytest.mark.parametrize("loader", ["teacher", "metric weights"])
def test_refused_pt_names_file_and_global_and_never_advises_weights_only_false(
        tmp_path, monkeypatch, payload, loader):
    from pipeline.metrics.weights import load_state_dict_file

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    obj, name = ((_Exploit(), f"{os.system.__module__}.system") if payload == "os.system"
                 else (_Harmless(), f"{__name__}._Harmless"))
    torch.save({"g_ema": obj}, path)
    load = load_teacher if loader == "teacher" else load_state_dict_file
    with pytest.raises(CheckpointError) as err:
        load(path)
    msg = str(err.value)
    assert str(path) in msg and name in msg and "refusing to load" in msg
    assert "re-save only its tensors" in msg
    # torch's advice (weights_only=False, allowlisting the global) is not passed on.
    for advice in ("weights_only=False", "weights_only", "set to `False`", "safe_globals", "trust the"):
        assert advice not in msg, advice
    assert not (tmp_path / "EXPLOITED").exists()


def test_refused_pt_without_a_global_keeps_torchs_reason_but_not_its_advice(tmp_path):
    path = tmp_path / "junk.pt"
    # torch's legacy format (a pickled magic number first), then an unknown opcode
    path.write_bytes(pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2) + b"garbage" * 4)
    with pytest.raises(CheckpointError) as err:
        load_teacher(path, format="rosinality")
    msg = str(err.value)
    assert str(path) in msg and "Unsupported operand" in msg
    assert "weights_only" not in msg and "set to `False`" not in msg


def test_missing_and_misshapen_keys_are_named(tmp_path, tiny_teacher):
    state = {k: v for k, v in tiny_teacher.state_dict().items() if k != "w_avg"}
    del state["convs.1.noise.weight"]
    torch.save({"g_ema": state}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"missing keys convs\.1\.noise\.weight"):
        load_teacher(tmp_path / "missing.pt")

    state = {k: v for k, v in tiny_teacher.state_dict().items() if k != "w_avg"}
    state["convs.1.conv.modulation.bias"] = torch.zeros(7)
    torch.save({"g_ema": state}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"convs\.1\.conv\.modulation\.bias has shape \[7\]"):
        load_teacher(tmp_path / "shape.pt")

    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no 'g_ema'"):
        load_teacher(tmp_path / "other.pt")


def test_unknown_truncated_and_explicitly_wrong_formats_fail_clearly(tmp_path, tiny_teacher):
    (tmp_path / "x.bin").write_bytes(b"GIF89a not a checkpoint")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        load_teacher(tmp_path / "x.bin")

    save_rosinality(tiny_teacher, tmp_path / "ok.pt")
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_teacher(tmp_path / "cut.pt")

    save_teacher(tiny_teacher, tmp_path / "t.safetensors")
    cut = (tmp_path / "t.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(cut[:-100])
    with pytest.raises(CheckpointError):
        load_teacher(tmp_path / "cut.safetensors")

    with pytest.raises(CheckpointError, match="unknown checkpoint format 'onnx'"):
        load_teacher(tmp_path / "ok.pt", format="onnx")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_teacher(tmp_path / "absent.pt")


def test_safetensors_without_teacher_header_is_rejected(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(CheckpointError, match="not a stylegan2-teacher/v1 checkpoint"):
        load_teacher(tmp_path / "plain.safetensors")


def test_nan_weights_are_rejected(tmp_path, tiny_teacher):
    state = {k: v.clone() for k, v in tiny_teacher.state_dict().items() if k != "w_avg"}
    state["style.1.weight"][0, 0] = float("nan")
    torch.save({"g_ema": state}, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match="NaN"):
        load_teacher(tmp_path / "nan.pt")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One file of each format, and an HTML page, by name (read only: shared by the tests)."""
    folder = tmp_path_factory.mktemp("formats")
    teacher = random_generator(StyleGAN2Config.config_f(**TINY), seed=1)
    save_teacher(teacher, folder / "project.safetensors")
    save_rosinality(teacher, folder / "rosinality.pt")
    save_nvidia_pickle(teacher, folder / "nvidia.pkl")
    (folder / "page.html").write_bytes(b"<!doctype html><title>Sign in</title>")
    return {p.stem: p for p in folder.iterdir()}


@pytest.mark.parametrize("file, forced, looks", [
    ("rosinality", "nvidia", "a rosinality/stylegan2-pytorch checkpoint"),
    ("nvidia", "rosinality", "an NVIDIA network pickle"),
    ("rosinality", "project", "a rosinality/stylegan2-pytorch checkpoint"),
    ("project", "nvidia", "a project-format (safetensors) checkpoint"),
])
def test_forced_format_that_does_not_match_names_the_format_the_file_has(files, file, forced, looks):
    with pytest.raises(CheckpointError) as err:
        load_teacher(files[file], forced, where="https://host/teacher", format_key="fetch_teacher.format")
    assert str(err.value) == (f"https://host/teacher: fetch_teacher.format is {forced!r} but the file "
                              f"looks like {looks}; set fetch_teacher.format: {file} or auto")


def test_forced_format_on_a_file_of_no_known_format_says_so(files):
    with pytest.raises(CheckpointError) as err:
        load_teacher(files["page"], "rosinality")
    assert str(err.value) == (f"{files['page']}: format is 'rosinality' but the file is not a checkpoint "
                              "of any known format (first bytes b'<!doctyp'); check that the source is "
                              "the checkpoint file itself")


@pytest.mark.parametrize("file, expected", [("rosinality", "not a readable torch checkpoint"),
                                            ("nvidia", r"not a readable network pickle \(truncated or corrupt")])
@pytest.mark.parametrize("forced", [False, True])
def test_truncated_file_of_the_forced_or_detected_format_is_called_corrupt(files, tmp_path, file, expected,
                                                                           forced):
    cut = tmp_path / f"cut-{file}"
    cut.write_bytes(files[file].read_bytes()[:3000])
    with pytest.raises(CheckpointError, match=f"cut-{file}: {expected}"):
        load_teacher(cut, file if forced else "auto")
