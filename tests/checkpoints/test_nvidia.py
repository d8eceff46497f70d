"""NVIDIA network pickles: faithful conversion, and nothing in the file ever runs."""

from __future__ import annotations

import collections
import os
import pickle
import pickletools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.checkpoints import detect_format, load_teacher, nvidia
from pipeline.checkpoints.nvidia import (
    ALLOWED_GLOBALS,
    PersistentObject,
    load_nvidia,
    read_network_pickle,
)
from pipeline.errors import CheckpointError
from pipeline.models.stylegan2 import StyleGAN2Config, random_generator
from tests.checkpoints.nvidia_writer import dump_network_pickle, nvidia_network, save_nvidia_pickle


def _cfg(**update) -> StyleGAN2Config:
    cfg = StyleGAN2Config.config_f(32, channel_max=32, style_dim=32, n_mlp=2)
    return cfg.model_copy(update=update) if update else cfg


@pytest.fixture(scope="module")
def teacher():
    return random_generator(_cfg(conv_clamp=256.0), seed=3)


def _images(generator, seed: int = 0, **kw) -> torch.Tensor:
    z = torch.randn(3, generator.cfg.style_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return generator(z, noise_mode="const", **kw).image


def _globals(path: Path) -> set[str]:
    """Every global a pickle imports (GLOBAL / STACK_GLOBAL), as 'module.name'."""
    found, strings = set(), []
    with open(path, "rb") as f:
        for op, arg, _ in pickletools.genops(f):
            if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
                strings.append(arg)
            elif op.name == "STACK_GLOBAL":
                found.add(f"{strings[-2]}.{strings[-1]}")
            elif op.name == "GLOBAL":
                found.add(arg.replace(" ", "."))
    return found


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4])
@pytest.mark.parametrize("fmt", ["auto", "nvidia"])
def test_round_trip_gives_identical_images(teacher, tmp_path, protocol, fmt):
    path = tmp_path / "network-snapshot.pkl"
    save_nvidia_pickle(teacher, path, protocol=protocol)
    assert detect_format(path) == "nvidia"
    loaded = load_teacher(path, format=fmt)
    assert loaded.format == "nvidia"
    assert loaded.generator.cfg == teacher.cfg
    assert loaded.generator.cfg.conv_clamp == 256.0
    assert torch.equal(_images(loaded.generator), _images(teacher))
    assert torch.equal(
        _images(loaded.generator, truncation_psi=0.6), _images(teacher, truncation_psi=0.6)
    )
    assert loaded.notes["w_avg"] == "from checkpoint"
    assert loaded.notes["class"] == "training.networks.Generator"
    assert loaded.notes["conv_clamp"] == "256.0"


def test_conv_clamp_and_lr_multiplier_carried_over(tmp_path):
    # A clamp small enough to bite, and a non-default mapping learning rate.
    g = random_generator(_cfg(conv_clamp=0.5, lr_mlp=0.02), seed=4)
    save_nvidia_pickle(g, tmp_path / "g.pkl")
    loaded, notes = load_nvidia(tmp_path / "g.pkl")
    assert loaded.cfg.conv_clamp == 0.5 and loaded.cfg.lr_mlp == 0.02
    assert notes["lr_mlp"] == "0.02"
    unclamped = random_generator(_cfg(lr_mlp=0.02), seed=4)
    assert torch.equal(_images(loaded), _images(g))
    assert not torch.equal(_images(loaded), _images(unclamped))  # the clamp is really applied


def test_no_clamp_is_none(tmp_path):
    g = random_generator(_cfg(), seed=5)
    save_nvidia_pickle(g, tmp_path / "g.pkl")
    loaded, notes = load_nvidia(tmp_path / "g.pkl")
    assert loaded.cfg.conv_clamp is None and notes["conv_clamp"] == "None"
    assert torch.equal(_images(loaded), _images(g))


def test_written_pickle_has_nvidia_structure(teacher, tmp_path):
    path = tmp_path / "g.pkl"
    save_nvidia_pickle(teacher, path, protocol=3)
    names = _globals(path)
    assert {
        "torch_utils.persistence._reconstruct_persistent_obj",
        "dnnlib.util.EasyDict",
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch.storage._load_from_bytes",
        "collections.OrderedDict",
    } <= names
    assert {tuple(n.rsplit(".", 1)) for n in names} <= set(ALLOWED_GLOBALS)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    data = read_network_pickle(path)
    assert set(data) == {"training_set_kwargs", "G", "D", "G_ema", "augment_pipe"}
    g = data["G_ema"]
    assert g.class_name == "Generator" and g.module_src
    assert set(g.modules) == {"synthesis", "mapping"}
    b8 = g.child("synthesis").child("b8")
    assert set(b8.modules) == {"conv0", "conv1", "torgb"}
    assert b8.child("conv0").state["up"] == 2 and b8.child("conv0").state["conv_clamp"] == 256.0
    assert b8.child("conv0").parameters["noise_strength"].shape == ()
    assert b8.child("conv0").buffers["noise_const"].shape == (8, 8)
    assert g.state["_init_kwargs"]["synthesis_kwargs"]["conv_clamp"] == 256.0


def test_module_source_in_the_pickle_is_never_executed(teacher, tmp_path):
    marker = tmp_path / "pwned"
    tree = nvidia_network(teacher)
    evil_src = f"open({str(marker)!r}, 'w').write('x')\nclass Generator: pass\n"
    tree.module_src = evil_src
    tree.child("mapping").module_src = evil_src
    dump_network_pickle({"G_ema": tree}, tmp_path / "g.pkl")
    loaded, notes = load_nvidia(tmp_path / "g.pkl")
    assert not marker.exists()
    assert torch.equal(_images(loaded), _images(teacher))
    assert notes["class"] == "<pickled module>.Generator"


def test_real_pickle_loads_without_torch_utils_importable(teacher, tmp_path):
    """A fresh interpreter without NVIDIA's packages on the path reads the file."""
    save_nvidia_pickle(teacher, tmp_path / "g.pkl")
    code = (
        "import sys; from pipeline.checkpoints.nvidia import load_nvidia; "
        f"g, n = load_nvidia({str(tmp_path / 'g.pkl')!r}); "
        "assert 'torch_utils' not in sys.modules and 'dnnlib' not in sys.modules; "
        "print(g.cfg.resolution)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "32"


def test_the_library_only_reads_network_pickles():
    """Writing NVIDIA pickles is a test helper (tests/checkpoints/nvidia_writer.py)."""
    writer = {"save_nvidia_pickle", "nvidia_network", "dump_network_pickle", "STAND_IN_SOURCE"}
    assert not writer & set(dir(nvidia))
    assert not any(isinstance(v, type) and issubclass(v, pickle.Pickler | pickle._Pickler)
                   for v in vars(nvidia).values())


# -- malicious payloads ----------------------------------------------------------------------


class _Payload:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _payloads(marker: Path) -> dict[str, object]:
    return {
        "os.system": _Payload(os.system, f"touch {marker}"),
        "builtins.exec": _Payload(exec, f"open({str(marker)!r}, 'w').write('x')"),
        "builtins.eval": _Payload(eval, f"open({str(marker)!r}, 'w').write('x')"),
        "subprocess.Popen": _Payload(subprocess.Popen, ["touch", str(marker)]),
    }


@pytest.mark.parametrize(
    "name", ["os.system", "builtins.exec", "builtins.eval", "subprocess.Popen"]
)
def test_payload_with_disallowed_global_is_refused(teacher, tmp_path, name):
    marker = tmp_path / "pwned"
    tree = nvidia_network(teacher)
    # Hide the payload deep inside, next to real data, as an attacker would.
    tree.child("mapping").state["evil"] = _payloads(marker)[name]
    path = tmp_path / "evil.pkl"
    dump_network_pickle({"G_ema": tree}, path)
    func = _payloads(marker)[name].func
    imported = f"{func.__module__}.{func.__name__}"  # os.system pickles as posix.system
    for fmt in ("auto", "nvidia"):
        with pytest.raises(CheckpointError) as err:
            load_teacher(path, format=fmt)
        msg = str(err.value)
        assert f"tried to import {imported}" in msg and "nothing from the file was executed" in msg
        assert str(path) in msg
    assert not marker.exists()


def test_protocol_0_inst_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pkl"
    path.write_bytes(b"\x80\x02(S'touch " + str(marker).encode() + b"'\nios\nsystem\n.")
    with pytest.raises(CheckpointError, match=r"tried to import os\.system"):
        load_nvidia(path)
    assert not marker.exists()


def test_payload_inside_a_tensor_storage_is_refused(tmp_path):
    """Storage bytes are a nested torch.save: they go through torch's weights-only unpickler."""
    marker = tmp_path / "pwned"
    inner = pickle.dumps(_Payload(os.system, f"touch {marker}"), protocol=2)
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": _Payload(torch.storage._load_from_bytes, inner)}, f)
    with pytest.raises(CheckpointError, match="refusing to load: a tensor storage") as err:
        load_nvidia(path)
    assert "nothing from the file was executed" in str(err.value)
    assert not marker.exists()


def test_tensor_reaching_past_its_storage_is_refused(tmp_path):
    """Tensor.set_ does not bounds-check: a forged size would read foreign memory."""
    storage = torch.zeros(4)._typed_storage()  # what Tensor.__reduce_ex__ pickles
    forged = _Payload(
        torch._utils._rebuild_tensor_v2,
        storage,
        0,
        (1000, 1000),
        (1000, 1),
        False,
        collections.OrderedDict(),
    )
    path = tmp_path / "forged.pkl"
    with open(path, "wb") as f:
        pickle.dump({"G_ema": forged}, f)
    with pytest.raises(CheckpointError, match="past the end of its storage"):
        load_nvidia(path)


def test_persistent_ids_are_refused(tmp_path):
    path = tmp_path / "pid.pkl"
    path.write_bytes(b"\x80\x02X\x03\x00\x00\x00abcQ.")  # BINPERSID
    with pytest.raises(CheckpointError, match="persistent id"):
        load_nvidia(path)


# -- unsupported networks and broken files ---------------------------------------------------


def _child(tree: PersistentObject, dotted: str) -> PersistentObject:
    for name in dotted.split("."):
        tree = tree.child(name)
    return tree


def _blank(class_name: str) -> PersistentObject:
    return PersistentObject(class_name, {"_parameters": {}, "_buffers": {}, "_modules": {}})


def _dump(tmp_path: Path, tree: PersistentObject, **extra) -> Path:
    path = tmp_path / "g.pkl"
    dump_network_pickle({"G": tree, "G_ema": tree, **extra}, path)
    return path


def test_conditional_generator_is_rejected(teacher, tmp_path):
    tree = nvidia_network(teacher)
    tree.state["c_dim"] = 10
    mapping = tree.child("mapping")
    mapping.state["c_dim"] = 10
    mapping.state["_modules"]["embed"] = _blank("FullyConnectedLayer")
    with pytest.raises(CheckpointError, match=r"conditional generator \(c_dim=10"):
        load_nvidia(_dump(tmp_path, tree))


def test_label_embedding_alone_marks_a_conditional_generator(teacher, tmp_path):
    tree = nvidia_network(teacher)
    tree.child("mapping").state["_modules"]["embed"] = _blank("FullyConnectedLayer")
    with pytest.raises(CheckpointError, match="conditional generator"):
        load_nvidia(_dump(tmp_path, tree))


def test_stylegan3_generator_is_rejected(teacher, tmp_path):
    tree = nvidia_network(teacher)
    synthesis = tree.child("synthesis")
    synthesis.state["_modules"] = collections.OrderedDict(
        input=_blank("SynthesisInput"),
        L0_36_32=_blank("SynthesisLayer"),
        L1_36_32=_blank("SynthesisLayer"),
    )
    with pytest.raises(
        CheckpointError, match=r"StyleGAN3 \(alias-free\) synthesis is not a StyleGAN2 architecture"
    ):
        load_nvidia(_dump(tmp_path, tree))


def test_non_rgb_generator_is_rejected(teacher, tmp_path):
    tree = nvidia_network(teacher)
    tree.state["img_channels"] = 1
    with pytest.raises(CheckpointError, match="1 image channels; expected 3"):
        load_nvidia(_dump(tmp_path, tree))


def test_resnet_architecture_is_rejected(teacher, tmp_path):
    tree = nvidia_network(teacher)
    _child(tree, "synthesis.b8").state["architecture"] = "resnet"
    with pytest.raises(CheckpointError, match="'resnet' architecture"):
        load_nvidia(_dump(tmp_path, tree))


def test_missing_g_ema_is_rejected(teacher, tmp_path):
    path = tmp_path / "g.pkl"
    dump_network_pickle({"G": nvidia_network(teacher), "D": None}, path)
    with pytest.raises(CheckpointError, match=r"no 'G_ema' generator .*'D', 'G'"):
        load_nvidia(path)


def test_g_ema_that_is_not_a_network_is_rejected(tmp_path):
    path = tmp_path / "g.pkl"
    dump_network_pickle({"G_ema": {"weight": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not a torch_utils.persistence network"):
        load_nvidia(path)


def test_top_level_not_a_dict_is_rejected(tmp_path):
    path = tmp_path / "g.pkl"
    dump_network_pickle([1, 2, 3], path)
    with pytest.raises(CheckpointError, match="expected a dict network pickle"):
        load_nvidia(path)


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_file_is_a_checkpoint_error(teacher, tmp_path, keep):
    full = tmp_path / "full.pkl"
    save_nvidia_pickle(teacher, full)
    data = full.read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"cut\.pkl: not a readable network pickle"):
        load_teacher(cut)


def test_garbage_after_pickle_header_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"\x80\x04" + os.urandom(256))
    with pytest.raises(CheckpointError):
        load_teacher(path, format="nvidia")


def test_misshapen_tensor_error_names_the_key(teacher, tmp_path):
    tree = nvidia_network(teacher)
    conv0 = _child(tree, "synthesis.b8.conv0")
    conv0.state["_parameters"]["weight"] = torch.zeros(32, 16, 3, 3)  # in channels 16, not 32
    with pytest.raises(
        CheckpointError, match=r"G_ema\.synthesis\.b8\.conv0\.weight has shape \[32, 16, 3, 3\]"
    ):
        load_nvidia(_dump(tmp_path, tree))


def test_wrong_rank_tensor_error_names_the_key(teacher, tmp_path):
    tree = nvidia_network(teacher)
    _child(tree, "synthesis.b4").state["_parameters"]["const"] = torch.zeros(32, 16)
    with pytest.raises(CheckpointError, match=r"G_ema\.synthesis\.b4\.const has shape \[32, 16\]"):
        load_nvidia(_dump(tmp_path, tree))


def test_unexpected_resample_filter_is_rejected(teacher, tmp_path):
    tree = nvidia_network(teacher)
    _child(tree, "synthesis.b16.conv0").state["_buffers"]["resample_filter"] = torch.ones(4, 4) / 16
    with pytest.raises(
        CheckpointError, match=r"b16\.conv0\.resample_filter is not the \[1,3,3,1\]"
    ):
        load_nvidia(_dump(tmp_path, tree))


def test_generator_without_noise_inputs_loads_with_zero_strength(teacher, tmp_path):
    tree = nvidia_network(teacher)
    for block in tree.child("synthesis").modules.values():
        for name in ("conv0", "conv1"):
            layer = block.child(name)
            if layer is not None:
                layer.state["use_noise"] = False
                del layer.state["_parameters"]["noise_strength"]
                del layer.state["_buffers"]["noise_const"]
    loaded, notes = load_nvidia(_dump(tmp_path, tree))
    assert "use_noise=False" in notes["noise"]
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = teacher(z, noise_mode="zero").image
        assert torch.allclose(loaded(z, noise_mode="random").image, expected, atol=0, rtol=0)


def test_missing_w_avg_is_estimated_and_noted(teacher, tmp_path):
    tree = nvidia_network(teacher)
    del tree.child("mapping").state["_buffers"]["w_avg"]
    loaded, notes = load_nvidia(_dump(tmp_path, tree))
    assert notes["w_avg"].startswith("estimated")
    assert torch.equal(_images(loaded), _images(teacher))  # psi = 1 does not use w_avg
