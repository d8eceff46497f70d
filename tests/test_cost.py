"""pipeline.cost: analytic counts against the real modules (params, a flop counter plus
hooks over the forward pass, torchprofile), and the CLI contract."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torchprofile import profile_macs

from pipeline.cost import CostError, _main, count, default_channels
from pipeline.models.elastic import subnet
from pipeline.models.mobile import (
    Head,
    IDWTUpsample,
    MobileSynthesis,
    ModulatedConv,
    StudentConfig,
    fold_demodulation,
)
from pipeline.models.stylegan2 import Generator, ModulatedConv2d, StyleGAN2Config, resolutions

REPO = Path(__file__).resolve().parents[1]
D, N_MLP = 16, 2


def build(arch: str, res: int, ch: list[int], **student) -> nn.Module:
    """A sub-network with per-layer channels ``ch`` (the cost lists' layout), sliced by
    pipeline.models.elastic.subnet from a full network 16 channels wide (the student
    folded, as at inference; ``student``: its head and input_layer)."""
    if arch == "teacher":
        full = Generator(StyleGAN2Config(resolution=res, style_dim=D, n_mlp=N_MLP,
                                         channels={r: 16 for r in resolutions(res)}))
        return subnet(full, ch).eval()
    full = MobileSynthesis(StudentConfig(resolution=res, style_dim=D, **student,
                                         channels={r: 16 for r in resolutions(res // 2)}))
    return fold_demodulation(subnet(full, ch)).eval()


def n_list(arch: str, res: int) -> int:
    return 2 * res.bit_length() - 2 - (2 if arch == "teacher" else 4)


SEPARABLE, UPTORGB, SKIP = dict(input_layer="separable"), dict(head="uptorgb"), dict(skip=True)
CASES = [  # (arch, R, channels, R_OUT, the student's head / input_layer if not the default)
    ("teacher", 32, [8, 8, 8, 8, 8, 8, 8, 8], None, {}),  # uniform reduced
    ("teacher", 32, [6, 5, 7, 3, 4, 9, 2, 5], None, {}),  # flexible per layer
    ("teacher", 64, [6, 5, 7, 3, 4, 9, 2, 5, 3, 3], 16, {}),  # lower output resolution
    ("student", 32, [8, 8, 8, 8, 8, 8], None, {}),
    ("student", 32, [6, 4, 5, 12, 3, 7], None, {}),
    ("student", 64, [6, 4, 5, 12, 3, 8, 4, 4], 32, {}),
    ("student", 32, [6, 4, 5, 12, 3, 7], None, SEPARABLE),
    ("student", 64, [6, 4, 5, 12, 3, 8, 4, 4], 32, SEPARABLE),
    ("student", 32, [6, 4, 5, 12, 3, 7], None, UPTORGB),
    ("student", 64, [6, 4, 5, 12, 3, 8, 4, 4], 32, UPTORGB),
    ("student", 64, [6, 4, 5, 12, 3, 8, 4, 4], 16, {**UPTORGB, **SEPARABLE}),
    ("student", 32, [6, 4, 5, 12, 3, 7], None, SKIP),
    ("student", 64, [6, 4, 5, 12, 3, 8, 4, 4], 32, {**UPTORGB, **SKIP}),
]


def _net(arch, res, ch, out, kw):
    """The network that the counts describe: built at the output resolution, list cut."""
    out = out or res
    return build(arch, out, ch[: n_list(arch, out)], **kw), out


def _inputs(net, arch, out):
    torch.manual_seed(0)
    lat = 2 * out.bit_length() - 4
    wplus = torch.randn(1, lat, D)
    noise = [torch.randn(1, 1, r, r) for r in [4] + [r for r in resolutions(out)[1:] for _ in (0, 1)]]
    return wplus, noise


@pytest.mark.parametrize("arch,res,ch,out,kw", CASES)
def test_params(arch, res, ch, out, kw):
    net, o = _net(arch, res, ch, out, kw)
    if arch == "teacher":
        expected = sum(p.numel() for n, p in net.named_parameters() if not n.startswith("style."))
        mapping = sum(p.numel() for p in net.style.parameters())
    else:  # only the last head runs at inference (with skips: every head)
        aux = [] if net.cfg.skip else [net.head1, *(lv.head for lv in net.levels)][:-1]
        expected = sum(p.numel() for p in net.parameters()) - sum(
            p.numel() for h in aux for p in h.parameters())
        mapping = N_MLP * (D * D + D)
    got = count(arch, res, ch, output_resolution=out, style_dim=D, n_mlp=N_MLP, **kw)
    assert (got["params"], got["params_mapping"]) == (expected, mapping)


def _elementwise_hooks(net, tally):
    """What the flop counter misses: teacher s*w (+ sum of squares), student x*s, and the
    UpToRGB head's bilinear x2 (4 taps per output element)."""
    def modconv(m, args, output):
        tally[0] += m.weight.numel() * (2 if m.demodulate else 1)

    def activation(m, args):
        tally[0] += args[0].numel()

    def bilinear(to_image):
        def counted(out):
            image = to_image(out)
            tally[0] += 4 * image.numel()
            return image
        return counted
    hooks = []
    for m in net.modules():
        if isinstance(m, ModulatedConv2d):
            hooks.append(m.register_forward_hook(modconv))
        elif isinstance(m, (ModulatedConv, IDWTUpsample, Head)):
            hooks.append(m.register_forward_pre_hook(activation))
        if isinstance(m, Head) and m.kind == "uptorgb":
            m.to_image = bilinear(m.to_image)
    return hooks


@pytest.mark.parametrize("arch,res,ch,out,kw", CASES)
def test_macs_match_forward_pass(arch, res, ch, out, kw, monkeypatch):
    from pipeline.models import mobile

    net, o = _net(arch, res, ch, out, kw)
    wplus, noise = _inputs(net, arch, o)
    run = net.synthesis if arch == "teacher" else net
    tally = [0]
    hooks = _elementwise_hooks(net, tally)
    up2 = mobile.up2

    def counted_up2(image):  # the skips' bilinear x2: 4 taps per output element
        tally[0] += 4 * 4 * image.numel()
        return up2(image)
    monkeypatch.setattr(mobile, "up2", counted_up2)
    # (with grad: FlopCounterMode's module tracker fails under no_grad)
    with FlopCounterMode(display=False) as fc:  # convs (incl. FIR, transposed) and linears
        image = run(wplus, noise)
    for h in hooks:
        h.remove()
    assert image.shape[-1] == o
    got = count(arch, res, ch, output_resolution=out, style_dim=D, n_mlp=N_MLP, **kw)
    assert got["macs"] == fc.get_total_flops() // 2 + tally[0]
    assert got["macs_mapping"] == N_MLP * D * D


class _TeacherZ(nn.Module):
    def __init__(self, g: Generator) -> None:
        super().__init__()
        self.g = g

    def forward(self, z):
        return self.g(z, noise_mode="const").image


class _StudentZ(nn.Module):
    """Teacher mapping -> W+ -> student synthesis, as the student runs from z."""

    def __init__(self, s: MobileSynthesis, res: int) -> None:
        super().__init__()
        self.s = s
        self.g = Generator(StyleGAN2Config(resolution=res, style_dim=D, n_mlp=N_MLP,
                                           channels={r: 4 for r in resolutions(res)}))

    def forward(self, z):
        wplus = self.g.broadcast(self.g.mapping(z))
        return self.s(wplus, self.g.make_noise(1, "const"))


@pytest.mark.parametrize("arch,res,ch,out,kw", CASES)
@torch.no_grad()
def test_macs_anycost_match_torchprofile(arch, res, ch, out, kw):
    net, o = _net(arch, res, ch, out, kw)
    model = _TeacherZ(net) if arch == "teacher" else _StudentZ(net, o)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unhandled zero-cost ops (pad, flip, repeat)
        expected = profile_macs(model.eval(), torch.randn(1, D))
    got = count(arch, res, ch, output_resolution=out, style_dim=D, n_mlp=N_MLP, **kw)
    assert got["macs_anycost"] == expected


def test_config_f_defaults():
    t = count("teacher", 1024)
    assert t["params"] == 28_268_812 and len(t["channels"]) == 18
    assert count("teacher", 64, channel_multiplier=1)["channels"] == default_channels("teacher", 64, 1)
    # The default list is the explicit one; a short list for the output resolution also works.
    full = count("student", 256)
    assert count("student", 256, default_channels("student", 256)) == full
    low = count("student", 256, default_channels("student", 256), output_resolution=64)
    assert count("student", 256, default_channels("student", 64), output_resolution=64) == low
    assert low["macs"] < full["macs"]


@pytest.mark.parametrize("input_layer", ["dense", "separable"])
def test_config_f_student_params_are_the_real_modules(input_layer):
    """The 1024 config-f student as fold_demodulation leaves it (built on the meta device),
    last head only; the dense 4x4 conv is MobileStyleGAN's code's parameter count."""
    teacher = StyleGAN2Config.config_f(1024)
    cfg = StudentConfig.from_teacher(teacher.channels, 1024, 512, demodulation="folded",
                                     input_layer=input_layer)
    with torch.device("meta"):
        net = MobileSynthesis(cfg)
    aux = [net.head1, *(lv.head for lv in net.levels)][:-1]
    real = sum(p.numel() for p in net.parameters()) - sum(
        p.numel() for h in aux for p in h.parameters())
    assert count("student", 1024, input_layer=input_layer)["params"] == real
    gap = 512 * 512 * 9 - (512 * 9 + 512 * 512)  # dense 3x3 kernel vs depthwise + pointwise
    assert gap == 2_092_544
    assert count("student", 1024)["params"] - count("student", 1024, input_layer="separable")[
        "params"] == gap
    assert count("student", 1024) == count("student", 1024, head="wavelet", input_layer="dense")


def test_unknown_student_options_are_rejected():
    with pytest.raises(CostError, match="head"):
        count("student", 64, head="rgb")
    with pytest.raises(CostError, match="input_layer"):
        count("student", 64, input_layer="pointwise")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline.cost", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_prints_json():
    r = _cli("--arch", "student", "--resolution", "64", "--channels", "[8,8,8,8,8,8,8,8]",
             "--output-resolution", "32")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert all(isinstance(out[k], int) for k in ("params", "macs", "macs_anycost", "macs_mapping"))
    assert out == count("student", 64, [8] * 8, output_resolution=32)
    r = _cli("--arch", "student", "--resolution", "64", "--head", "uptorgb", "--input-layer",
             "separable")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == count("student", 64, head="uptorgb", input_layer="separable")


@pytest.mark.parametrize("args,word", [
    (["--arch", "teacher", "--resolution", "64", "--channels", "[8,8,8]"], "entries"),
    (["--arch", "student", "--resolution", "32", "--channels", "[8,6,8,8,8,8]"], "multiple"),
    (["--arch", "teacher", "--resolution", "100"], "power of two"),
    (["--arch", "teacher", "--resolution", "64", "--output-resolution", "128"], "output"),
    (["--arch", "teacher", "--resolution", "64", "--channels", "[8,"], "JSON"),
    (["--arch", "teacher", "--resolution", "64", "--channels", "[8,8,8,8,8,8,8,0,8,8]"], "positive"),
])
def test_cli_rejects(args, word, capsys):
    assert _main(args) == 2  # in-process: a subprocess per case costs 2-3 s of torch import
    err = capsys.readouterr()
    assert word in err.err and err.out == "" and len(err.err.strip().splitlines()) == 1


def test_cli_exit_status():
    r = _cli("--arch", "student", "--resolution", "32", "--channels", "[8,6,8,8,8,8]")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.startswith("error: ")
