"""The exported network computes what the training student computes, with less."""

from __future__ import annotations

import pytest
import torch

from pipeline.export.graph import (
    RUNTIME_FORMS,
    OutputHead,
    StyledConv,
    Upsample,
    build,
    for_runtime,
    reference,
)
from pipeline.models.mobile import MobileSynthesis, fold_demodulation

from .conftest import make_student


def make(teacher, demodulation: str = "fused", head: str = "wavelet",
         input_layer: str = "dense") -> MobileSynthesis:
    """make_student's student with the chosen 4x4 layer: the separable one keeps every
    other weight (its own depthwise and pointwise kernels random)."""
    student = make_student(teacher, demodulation, head)
    if input_layer == student.cfg.input_layer:
        return student
    other = MobileSynthesis(student.cfg.model_copy(update={"input_layer": input_layer}))
    other.load_state_dict(student.state_dict(), strict=False)
    return other.eval()


def inputs(teacher, kind: str, n: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    d = teacher.cfg.style_dim
    if kind == "wplus":  # every entry different: each layer must read its own
        return torch.randn(n, teacher.cfg.n_latent, d, generator=g)
    return torch.randn(n, d, generator=g)


@pytest.mark.parametrize("input_layer", ["dense", "separable"])
@pytest.mark.parametrize("demodulation", ["fused", "exact"])
@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
@pytest.mark.parametrize("kind", ["wplus", "w", "z"])
def test_the_folded_graph_equals_the_unfolded_student(tiny_teacher, demodulation, head, kind,
                                                      input_layer):
    student = make(tiny_teacher, demodulation, head, input_layer)
    x = inputs(tiny_teacher, kind)
    for output_range in ((0.0, 1.0), (-1.0, 1.0)):
        model = build(student, tiny_teacher, kind, output_range, truncation_psi=0.7)
        with torch.no_grad():
            got = model(x)
        want = reference(student, tiny_teacher, kind, x, output_range, truncation_psi=0.7)
        assert got.shape == (3, 3, 32, 32)
        assert (got - want).abs().max() < 2e-5
        assert got.min() >= output_range[0] and got.max() <= output_range[1]
        assert want.std() > 0.02  # a real image, not a constant


@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
def test_with_output_skips_every_head_draws_in_the_graph_as_in_training(tiny_teacher, head):
    plain = make(tiny_teacher, "fused", head)
    student = MobileSynthesis(plain.cfg.model_copy(update={"skip": True}))
    student.load_state_dict(plain.state_dict())
    student.eval()
    x = inputs(tiny_teacher, "wplus")
    for output_range in ((0.0, 1.0), (-1.0, 1.0)):
        model = build(student, tiny_teacher, "wplus", output_range)
        assert len([m for m in model.modules() if isinstance(m, OutputHead)]) == 1 + len(student.levels)
        with torch.no_grad():
            got = model(x)
            unskipped = build(plain, tiny_teacher, "wplus", output_range)(x)
        want = reference(student, tiny_teacher, "wplus", x, output_range)
        assert (got - want).abs().max() < 2e-5
        assert (got - unskipped).abs().max() > 1e-2  # the coarser heads do add to the image


def test_reference_is_the_students_own_forward_with_the_teachers_fixed_noise(tiny_teacher,
                                                                          tiny_student):
    wplus = inputs(tiny_teacher, "wplus")
    raw = tiny_student(wplus, tiny_teacher.make_noise(1, "const"))
    assert torch.allclose(reference(tiny_student, tiny_teacher, "wplus", wplus, (-1.0, 1.0)),
                          raw.clamp(-1, 1))
    unit = reference(tiny_student, tiny_teacher, "wplus", wplus, (0.0, 1.0))
    assert torch.allclose(unit, ((raw + 1) / 2).clamp(0, 1))


def test_fold_demodulation_leaves_the_image_unchanged(tiny_teacher, tiny_student):
    wplus, noise = inputs(tiny_teacher, "wplus"), tiny_teacher.make_noise(1, "const")
    with torch.no_grad():
        assert torch.allclose(fold_demodulation(tiny_student)(wplus, noise),
                              tiny_student(wplus, noise), atol=1e-5)


def test_a_folded_student_exports_like_the_unfolded_one(tiny_teacher, tiny_student):
    folded = fold_demodulation(tiny_student)
    assert folded.cfg.demodulation == "folded"
    x = inputs(tiny_teacher, "w")
    with torch.no_grad():
        assert torch.allclose(build(folded, tiny_teacher, "w")(x),
                              build(tiny_student, tiny_teacher, "w")(x), atol=1e-6)


@pytest.mark.parametrize("input_layer", ["dense", "separable"])
def test_only_the_last_head_is_in_the_graph_and_no_style_dependent_work_is_precomputed(
        tiny_teacher, input_layer):
    tiny_student = make(tiny_teacher, input_layer=input_layer)
    model = build(tiny_student, tiny_teacher, "w")
    heads = [m for m in model.modules() if isinstance(m, OutputHead)]
    assert len(heads) == 1
    names = [n for n, _ in model.named_parameters()]
    assert not any("head1" in n or "style_inv" in n for n in names)
    # Auxiliary heads' weights are gone: fewer parameters than the training student's heads
    last = tiny_student.levels[-1].head
    head_weights = sum(p.numel() for p in heads[0].parameters())
    assert head_weights == sum(p.numel() for p in last.parameters())
    convs = [m for m in model.modules() if isinstance(m, StyledConv)]
    assert convs[0].const is not None and convs[0].weight_dw is None  # dw(const) precomputed
    # ... where the 4x4 conv is depthwise; a dense one mixes channels: it runs on the const
    raw = tiny_student.input.input
    assert torch.equal(convs[0].const, raw) == (input_layer == "dense")
    assert convs[0].weight.shape[-1] == (3 if input_layer == "dense" else 1)
    assert all(c.noise is not None and c.noise.shape[:2] == (1, 1) for c in convs)  # baked


def test_the_same_input_gives_the_same_image(tiny_teacher, tiny_student):
    model = build(tiny_student, tiny_teacher, "z", truncation_psi=0.5)
    z = inputs(tiny_teacher, "z")
    with torch.no_grad():
        assert torch.equal(model(z), model(z))


def test_a_sliced_subnetwork_exports_what_it_computes(tiny_teacher, tiny_student):
    elastic = pytest.importorskip("pipeline.models.elastic")
    for widths, resolution in (([8, 8, 8, 8, 4, 4], 32), ([12, 8, 8, 4], 16)):
        sub = elastic.subnet(tiny_student, widths, resolution).eval()
        assert sub.cfg.layer_widths == widths[: len(sub.cfg.layer_widths)]
        x = inputs(tiny_teacher, "wplus")
        model = build(sub, tiny_teacher, "wplus")
        with torch.no_grad():
            got = model(x)
        assert got.shape == (3, 3, resolution, resolution)
        assert (got - reference(sub, tiny_teacher, "wplus", x)).abs().max() < 2e-5
        # physically smaller: the pointwise weights have the sliced shapes
        assert sum(p.numel() for p in model.parameters()) < sum(
            p.numel() for p in build(tiny_student, tiny_teacher, "wplus").parameters())


@pytest.mark.parametrize("demodulation", ["fused", "exact"])
def test_a_levels_first_conv_is_modulated_in_its_up_sampling_not_at_full_resolution(
        tiny_teacher, demodulation):
    model = build(make(tiny_teacher, demodulation), tiny_teacher, "wplus")
    layers = list(model.synthesis.layers)
    ups = [k for k, m in enumerate(layers) if isinstance(m, Upsample)]
    assert ups and all(m.modulated == (k - 1 not in ups) for k, m in enumerate(layers)
                       if isinstance(m, StyledConv))
    assert all(layers[k].next_weight is layers[k + 1].affine_weight for k in ups)
    with pytest.raises(ValueError, match="first conv"):
        layers[ups[0]].absorb(layers[ups[0] + 2])  # the level's second conv reads another entry


@pytest.mark.parametrize("runtime", ["onnxruntime", "xnnpack", "coreml"])
@pytest.mark.parametrize("demodulation", ["fused", "exact"])
@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
def test_each_runtimes_form_of_the_up_sampling_draws_the_same_image(tiny_teacher, runtime,
                                                                     demodulation, head):
    from pipeline.models.elastic import subnet

    student = make(tiny_teacher, demodulation, head)
    x = inputs(tiny_teacher, "wplus")
    # the sub-network's levels have 3 and 2 channels: blocks of 1 and 2 channels
    for net in (student, subnet(student, [12, 12, 8, 8], 16).eval()):
        model = build(net, tiny_teacher, "wplus")
        flavoured = for_runtime(model, runtime)
        assert {m.form for m in flavoured.modules() if isinstance(m, Upsample)} == {
            RUNTIME_FORMS.get(runtime, "shuffle")}
        with torch.no_grad():
            got = flavoured(x)
        assert (got - reference(net, tiny_teacher, "wplus", x)).abs().max() < 2e-5
        assert {m.form for m in model.modules() if isinstance(m, Upsample)} == {"shuffle"}  # a copy
    assert for_runtime(model, "coreml") is model  # nothing to change, nothing copied
    with pytest.raises(ValueError, match="shuffle, blocks or deconv"):
        next(m for m in model.modules() if isinstance(m, Upsample)).set_form("nearest")
