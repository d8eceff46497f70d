"""Elastic channels: sub-networks (sliced copies and shared-weight calls), importance
sorting that keeps the full network's function, lower output resolutions, sampling."""

from __future__ import annotations

import random

import pytest
import torch

from pipeline.models.elastic import (
    Arch,
    Elastic,
    arch_dim,
    permute_,
    permute_optimizer_,
    sample_arch,
    sort_channels_,
    sub_config,
    subnet,
    uniform_widths,
)
from pipeline.models.mobile import MobileSynthesis, StudentConfig
from pipeline.models.stylegan2 import Generator, StyleGAN2Config, resolutions

D = 16


def randomize_(net: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial biases, noise strengths and fused-demodulation constants, so that
    a wrong permutation anywhere changes the output."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(("bias", "noise.weight", "style_inv")):
                p.copy_(torch.rand_like(p) + 0.5 if name.endswith("style_inv") else torch.randn_like(p) * 0.3)
    return net


def teacher(res: int = 32) -> Generator:
    cfg = StyleGAN2Config(resolution=res, style_dim=D, n_mlp=2,
                          channels={r: 16 if r < 32 else 8 for r in resolutions(res)})
    return randomize_(Generator(cfg)).double().eval()


def student(res: int = 32, demodulation: str = "fused", **kw) -> MobileSynthesis:
    """kw: head, input_layer (the 4x4 conv: dense by default)."""
    cfg = StudentConfig(resolution=res, style_dim=D, demodulation=demodulation, **kw,
                        channels={r: 16 if r < 16 else 8 for r in resolutions(res // 2)})
    return randomize_(MobileSynthesis(cfg)).double().eval()


STUDENTS = {  # every layer kind the slicing and sorting must know
    "separable": lambda res=32: student(res, input_layer="separable"),
    "exact": lambda res=32: student(res, "exact"),
    "exact_separable": lambda res=32: student(res, "exact", input_layer="separable"),
    "uptorgb": lambda res=32: student(res, head="uptorgb"),
}


def inputs(net, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    res = net.cfg.resolution if isinstance(net, Generator) else net.cfg.resolution
    n_latent = 2 * res.bit_length() - 4
    noise_res = [4] + [r for r in resolutions(res)[1:] for _ in (0, 1)]
    wplus = torch.randn(batch, n_latent, D, generator=g, dtype=torch.float64)
    noise = [torch.randn(batch, 1, r, r, generator=g, dtype=torch.float64) for r in noise_res]
    return wplus, noise


def run(net, wplus, noise):
    if isinstance(net, Generator):
        n = net.cfg.n_latent
        return net.synthesis(wplus[:, :n], noise[: net.cfg.num_layers])
    return net(wplus, noise)


@pytest.mark.parametrize("make", [teacher, student, *STUDENTS.values()],
                         ids=["teacher", "student", *STUDENTS])
def test_sorting_keeps_the_full_network_function(make):
    net = make()
    wplus, noise = inputs(net)
    before = run(net, wplus, noise)
    order = sort_channels_(net)
    assert any(not torch.equal(p.index, torch.arange(len(p.index))) for p in order)  # it moved
    assert torch.allclose(run(net, wplus, noise), before, rtol=1e-10, atol=1e-10)


def test_sorting_puts_important_channels_first():
    net = student()
    sort_channels_(net)
    # conv2 of level 0 is read by level 0's conv2... importance of conv1's outputs of level 0
    # = L1 of the pointwise kernel of level 0's conv2 over its inputs: non-increasing.
    pw = net.levels[0].conv2.conv.weight_pw.abs().sum((0, 2, 3))
    assert torch.all(pw[:-1] >= pw[1:])


def test_sorted_order_applies_to_copies_and_optimizer_state():
    net = student().float()
    copy = student().float()
    copy.load_state_dict(net.state_dict())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    wplus, noise = inputs(net)
    out = net.forward_all(wplus.float(), [n.float() for n in noise])  # every head: all get grads
    sum(image.square().mean() for image in out.images).backward()
    opt.step()
    copy.load_state_dict(net.state_dict())
    moments = {n: opt.state[p]["exp_avg"].clone() for n, p in net.named_parameters()}
    order = sort_channels_(net)
    permute_(dict(copy.named_parameters()), order)
    permute_(moments, order)
    permute_optimizer_(opt, net, order)
    for name, p in net.named_parameters():
        assert torch.equal(p, copy.get_parameter(name))
        assert torch.equal(opt.state[p]["exp_avg"], moments[name])


@pytest.mark.parametrize("make", [teacher, student, STUDENTS["separable"], STUDENTS["uptorgb"]],
                         ids=["teacher", "student", "separable", "uptorgb"])
@pytest.mark.parametrize("widths, out", [
    (None, None),  # the full network
    ("uniform", None),
    ("flexible", None),
    ("flexible", 16),  # stops early
])
def test_subnet_matches_shared_weight_call(make, widths, out):
    net = make()
    full = net.cfg.full_widths
    if widths == "uniform":
        widths = uniform_widths(net.cfg, 0.5)
    elif widths == "flexible":
        widths = [max(4, f - 4 * (i % 3)) for i, f in enumerate(full)]
    sub = subnet(net, widths, out)
    n_sub = sum(p.numel() for p in sub.parameters())
    n_full = sum(p.numel() for p in net.parameters())
    assert (n_sub < n_full) == (widths is not None or out is not None)
    wplus, noise = inputs(net)
    image = run(sub, wplus, noise)
    assert image.shape[-1] == (out or net.cfg.resolution)
    method = "synthesis" if isinstance(net, Generator) else "forward"
    shared = Elastic(net)(widths, out, method, *(
        (wplus[:, :sub.cfg.n_latent], noise[:sub.cfg.num_layers]) if isinstance(net, Generator)
        else (wplus, noise)))
    assert torch.allclose(shared, image, rtol=1e-10, atol=1e-10)
    if widths is None and out is None:
        assert torch.allclose(image, run(net, wplus, noise), rtol=1e-12, atol=1e-12)


def test_teacher_subnet_at_lower_resolution_is_the_full_networks_intermediate_rgb():
    net = teacher(32)
    wplus, noise = inputs(net)
    seen = {}
    net.to_rgbs[1].register_forward_hook(lambda m, a, out: seen.setdefault("rgb16", out))
    run(net, wplus, noise)
    assert torch.allclose(run(subnet(net, None, 16), wplus, noise), seen["rgb16"], atol=1e-12)


@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
def test_student_subnet_at_lower_resolution_is_the_full_networks_level_image(head):
    net = student(64, head=head)
    wplus, noise = inputs(net)
    images = net.forward_all(wplus, noise).images
    for k, res in ((2, 32), (3, 16), (4, 8)):
        assert torch.allclose(subnet(net, None, res)(wplus, noise), images[-k], atol=1e-12)
    sort_channels_(net)  # sorted, the sub-networks still are the full network's heads
    images = net.forward_all(wplus, noise).images
    widths = uniform_widths(net.cfg, 0.5)
    low = subnet(net, widths, 16)
    assert low.cfg.head == head and low(wplus, noise).shape[-1] == 16
    assert torch.allclose(Elastic(net)(widths, 16, "forward", wplus, noise), low(wplus, noise),
                          rtol=1e-10, atol=1e-10)
    assert torch.allclose(subnet(net, None, 32)(wplus, noise), images[-2], atol=1e-12)


def test_shared_weight_training_updates_only_the_sub_network_corner():
    net = student().float()
    widths = uniform_widths(net.cfg, 0.5)
    wplus, noise = inputs(net)
    out = Elastic(net)(widths, None, "forward_all", wplus.float(), [n.float() for n in noise])
    out.image.square().mean().backward()
    # level 0's pointwise [out, in, 1, 1] and the dense 4x4 kernel [out, in, 3, 3]
    for w, (k_out, k_in) in ((net.levels[0].conv2.conv.weight_pw.grad, (widths[3], widths[2])),
                             (net.conv1.conv.weight.grad, (widths[1], widths[0]))):
        assert w[:k_out, :k_in].abs().sum() > 0
        assert w[k_out:].abs().sum() == 0 and w[:, k_in:].abs().sum() == 0


@pytest.mark.parametrize("bad, match", [
    (dict(widths=[4] * 5), "entries"),
    (dict(widths=[16, 16, 16, 16, 16, 12]), r"each in \[1, full\]"),
    (dict(widths=[16, 6, 16, 16, 8, 8]), "multiples of 4"),
    (dict(output_resolution=4), "output resolution"),
    (dict(output_resolution=64), "output resolution"),
])
def test_bad_sub_configs_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        sub_config(student().cfg, **bad)


def test_sampling_is_seeded_and_always_valid():
    cfg = student(64).cfg
    draws = [sample_arch(cfg, random.Random(3), [0.25, 0.5, 0.75, 1.0], "sandwich", 16)
             for _ in range(2)]
    assert draws[0] == draws[1]
    rng = random.Random(0)
    archs = [sample_arch(cfg, rng, [0.25, 0.5, 0.75, 1.0], "sandwich", 16) for _ in range(200)]
    assert Arch(cfg.full_widths, 64) in archs  # the full network ...
    assert Arch(uniform_widths(cfg, 0.25), 16) in archs  # ... and the smallest, regularly
    assert {a.resolution for a in archs} == {16, 32, 64}
    for a in archs:
        sub_config(cfg, a.widths, a.resolution)  # raises if invalid
        code = a.encode(cfg)
        assert code.shape == (arch_dim(cfg),) and code[-3:].sum() == 1
    with pytest.raises(ValueError, match="sampling mode"):
        sample_arch(cfg, rng, [0.5], "nope")
