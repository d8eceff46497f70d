"""The MobileStyleGAN student: exact wavelets, DW-separable and dense modulated convs,
demod folding."""

import pytest
import torch

from pipeline.models.mobile import (
    MobileSynthesis,
    ModulatedConv,
    ModulatedDenseConv2d,
    ModulatedDWConv2d,
    StudentConfig,
    fold_demodulation,
    init_from_teacher,
)
from pipeline.models.stylegan2 import Generator, ModulatedConv2d, StyleGAN2Config
from pipeline.models.wavelets import dwt, idwt


def test_haar_dwt_is_exactly_inverted_and_preserves_energy():
    x = torch.randn(2, 5, 16, 8, dtype=torch.float64)
    y = dwt(x)
    assert y.shape == (2, 20, 8, 4)
    assert torch.allclose(idwt(y), x, atol=1e-12)
    assert torch.allclose(y.pow(2).sum(), x.pow(2).sum())  # orthonormal
    assert torch.allclose(y[:, :5], torch.nn.functional.avg_pool2d(x, 2) * 2)  # LL band
    z = torch.randn(1, 12, 4, 4, dtype=torch.float64)
    assert torch.allclose(dwt(idwt(z)), z, atol=1e-12)


def test_wavelet_transforms_reject_bad_shapes():
    with pytest.raises(ValueError, match="even"):
        dwt(torch.randn(1, 3, 5, 4))
    with pytest.raises(ValueError, match="multiple of 4"):
        idwt(torch.randn(1, 6, 4, 4))


def test_default_student_takes_the_teachers_channels_per_feature_resolution():
    teacher = StyleGAN2Config.config_f(1024)
    cfg = StudentConfig.from_teacher(teacher.channels, 1024, 512)
    assert cfg.channels == {4: 512, 8: 512, 16: 512, 32: 512, 64: 512, 128: 256, 256: 128,
                            512: 64}  # MobileStyleGAN's [512 x 5, 256, 128, 64]
    assert cfg.n_latent_used == teacher.n_latent - 2 and cfg.num_noise == teacher.num_layers - 2


@pytest.mark.parametrize("resolution", [8, 16, 64])
@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
def test_student_consumes_teacher_wplus_and_noise_at_any_resolution(resolution, head):
    teacher = StyleGAN2Config.config_f(resolution, channel_max=16, style_dim=8, n_mlp=1)
    cfg = StudentConfig.from_teacher(teacher.channels, resolution, 8, head=head)
    student = MobileSynthesis(cfg)
    wplus = torch.randn(2, teacher.n_latent, 8)
    noise = [torch.randn(2, 1, r, r) for r in teacher.noise_resolutions()]
    image = student(wplus, noise)
    assert image.shape == (2, 3, resolution, resolution)
    out = student.forward_all(wplus, noise)
    assert torch.equal(out.image, image)
    assert [i.shape[-1] for i in out.images] == [2 * r for r in cfg.levels]
    if head == "wavelet":
        assert [h.shape[1] for h in out.heads] == [12] * len(cfg.levels)


def test_student_uses_the_noise_it_is_given():
    teacher = StyleGAN2Config.config_f(16, channel_max=8, style_dim=8, n_mlp=1)
    student = MobileSynthesis(StudentConfig.from_teacher(teacher.channels, 16, 8))
    for m in student.modules():
        if hasattr(m, "weight") and m.__class__.__name__ == "NoiseInjection":
            torch.nn.init.constant_(m.weight, 0.5)
    wplus = torch.randn(1, teacher.n_latent, 8)
    noise = [torch.randn(1, 1, r, r) for r in teacher.noise_resolutions()]
    same = student(wplus, noise)
    assert torch.equal(same, student(wplus, [n.clone() for n in noise]))
    assert not torch.allclose(same, student(wplus, [torch.randn_like(n) for n in noise]))


def test_exact_demodulation_equals_the_composite_dense_kernel_formula():
    conv = ModulatedDWConv2d(6, 5, style_dim=4, demodulation="exact").double()
    w = torch.randn(3, 4, dtype=torch.float64)
    s = conv.modulation(w)  # [B, in]
    dense = conv.weight_pw[:, :, 0, 0][:, :, None, None] * conv.weight_dw[:, 0][None]  # [out,in,k,k]
    modulated = conv.scale * dense[None] * s[:, None, :, None, None]
    sigma = modulated.pow(2).sum([2, 3, 4]).add(1e-8).sqrt()
    assert torch.allclose(conv.sigma_inv(s), 1 / sigma)
    x = torch.randn(3, 6, 7, 7, dtype=torch.float64)
    expected = torch.stack([
        torch.nn.functional.conv2d(x[i : i + 1], modulated[i], padding=1)[0] / sigma[i, :, None, None]
        for i in range(3)])
    assert torch.allclose(conv(x, w), expected, atol=1e-10)


def test_dense_modulated_conv_is_stylegan2s():
    """Modulating x instead of w is the same conv; exact demodulation is StyleGAN2's, and
    fused with the stand-in equal to s is exact."""
    mine = ModulatedDenseConv2d(6, 5, style_dim=4, demodulation="exact").double()
    ref = ModulatedConv2d(6, 5, 3, style_dim=4).double()
    ref.load_state_dict({"weight": mine.weight[None], **{
        f"modulation.{k}": v for k, v in mine.modulation.state_dict().items()}})
    w = torch.randn(3, 4, dtype=torch.float64)
    x = torch.randn(3, 6, 7, 7, dtype=torch.float64)
    assert torch.allclose(mine(x, w), ref(x, w), atol=1e-10)
    fused = ModulatedDenseConv2d(6, 5, style_dim=4, demodulation="fused").double()
    fused.load_state_dict(mine.state_dict(), strict=False)
    fused.style_inv.data = mine.modulation(w[:1]).detach()[0]
    assert torch.allclose(fused(x[:1], w[:1]), ref(x[:1], w[:1]), atol=1e-10)


def test_the_4x4_layer_is_dense_by_default_and_separable_on_request():
    teacher = StyleGAN2Config.config_f(1024)
    nets = {}
    for layer in ("dense", "separable"):
        cfg = StudentConfig.from_teacher(teacher.channels, 1024, 512, input_layer=layer)
        with torch.device("meta"):
            nets[layer] = MobileSynthesis(cfg)
    assert StudentConfig.from_teacher(teacher.channels, 1024, 512).input_layer == "dense"
    assert isinstance(nets["dense"].conv1.conv, ModulatedDenseConv2d)
    assert isinstance(nets["separable"].conv1.conv, ModulatedDWConv2d)
    assert all(isinstance(lv.conv1.conv, ModulatedDWConv2d) for lv in nets["dense"].levels)
    n = {k: sum(p.numel() for p in net.parameters()) for k, net in nets.items()}
    assert n["dense"] - n["separable"] == 2_092_544  # the gap to MobileStyleGAN's code


@pytest.mark.parametrize("input_layer", ["dense", "separable"])
def test_folding_fused_demodulation_gives_the_same_images(input_layer):
    teacher = StyleGAN2Config.config_f(32, channel_max=16, style_dim=8, n_mlp=1)
    cfg = StudentConfig.from_teacher(teacher.channels, 32, 8, input_layer=input_layer)
    student = MobileSynthesis(cfg).double()
    for m in student.modules():  # trained-like constants, not the init value
        if isinstance(m, ModulatedConv):
            m.style_inv.data.uniform_(0.5, 2.0)
    folded = fold_demodulation(student)
    wplus = torch.randn(2, teacher.n_latent, 8, dtype=torch.float64)
    noise = [torch.randn(2, 1, r, r, dtype=torch.float64) for r in teacher.noise_resolutions()]
    assert torch.allclose(folded(wplus, noise), student(wplus, noise), rtol=1e-10, atol=1e-10)
    convs = [m for m in folded.modules() if isinstance(m, ModulatedConv)]
    assert convs and all(m.demodulation == "folded" and not hasattr(m, "style_inv") for m in convs)
    assert folded.cfg.demodulation == "folded"  # the config says what the modules are
    assert student.cfg.demodulation == "fused" and all(
        m.demodulation == "fused" for m in student.modules()
        if isinstance(m, ModulatedConv))  # the original is untouched
    with pytest.raises(ValueError, match="only fused"):
        convs[0].fold_()
    rebuilt = MobileSynthesis(folded.cfg).double()  # the config builds the folded modules
    rebuilt.load_state_dict(folded.state_dict())
    assert torch.equal(rebuilt(wplus, noise), folded(wplus, noise))


@pytest.mark.parametrize("bad, match", [
    (dict(resolution=32, channels={4: 8, 8: 8}), "keys"),
    (dict(resolution=16, channels={4: 6, 8: 8}), "multiples of 4"),
    (dict(resolution=24, channels={4: 8}), "power of two"),
])
def test_invalid_student_configs_are_rejected(bad, match):
    with pytest.raises(ValueError, match=match):
        StudentConfig(style_dim=8, **bad)


def test_calibration_in_chunks_is_the_calibration_of_one_batch(tiny_teacher):
    """style_inv = RMS of each fused conv's styles over all samples, accumulated chunk by
    chunk (at 1024x1024 a batch of 64 never fits), from the teacher's mapping alone."""
    from pipeline.models.mobile import ModulatedConv, calibrate_demodulation
    from pipeline.models.sampling import teacher_styles

    cfg = StudentConfig.from_teacher(tiny_teacher.cfg.channels, 32, tiny_teacher.cfg.style_dim)
    torch.manual_seed(0)
    one, chunked = MobileSynthesis(cfg), MobileSynthesis(cfg)
    chunked.load_state_dict(one.state_dict())

    def styles(batch):
        return teacher_styles(tiny_teacher, 24, batch, 1.0, torch.Generator().manual_seed(5), "cpu")

    calibrate_demodulation(one, styles(24))
    calibrate_demodulation(chunked, styles(5))
    convs = [(a, b) for a, b in zip(one.modules(), chunked.modules(), strict=True)
             if isinstance(a, ModulatedConv) and a.demodulation == "fused"]
    assert convs
    (wplus, _), = list(styles(24))
    first = one.conv1.conv  # the 4x4 conv sees W+ entry 0
    assert torch.allclose(first.style_inv, first.modulation(wplus[:, 0]).pow(2).mean(0).sqrt(),
                          rtol=1e-5)
    for a, b in convs:
        assert torch.allclose(a.style_inv, b.style_inv, rtol=1e-5)
        assert not torch.allclose(a.style_inv, torch.ones_like(a.style_inv))
    with pytest.raises(ValueError, match="at least one sample"):
        calibrate_demodulation(one, [])


@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
def test_a_student_initialised_from_the_teacher_draws_its_4x4_image(head):
    """Exact demodulation on both sides: the first image is the teacher's 4x4 RGB,
    up-sampled (nearest for the Haar LL band, bilinear for UpToRGB)."""
    torch.manual_seed(0)
    teacher = Generator(StyleGAN2Config.config_f(16, channel_max=16, style_dim=8, n_mlp=1)).eval()
    for p in teacher.parameters():  # non-trivial noise strengths and biases
        p.data.add_(0.1 * torch.randn_like(p))
    cfg = StudentConfig.from_teacher(teacher.cfg.channels, 16, 8, head=head, demodulation="exact")
    student = MobileSynthesis(cfg)
    init_from_teacher(student, teacher)
    wplus = torch.randn(3, teacher.cfg.n_latent, 8)
    noise = teacher.make_noise(3)
    with torch.no_grad():
        rgb = teacher.to_rgb1(teacher.conv1(teacher.input(3), wplus[:, 0], noise[0]), wplus[:, 1])
        first = student.forward_all(wplus, noise).images[0]
    mode = {"wavelet": {"mode": "nearest"}, "uptorgb": {"mode": "bilinear", "align_corners": False}}
    want = torch.nn.functional.interpolate(rgb, scale_factor=2, **mode[head])
    assert first.shape == (3, 3, 8, 8)
    assert torch.allclose(first, want, atol=1e-5)


def test_teacher_init_needs_the_teachers_dense_4x4_layer():
    teacher = Generator(StyleGAN2Config.config_f(16, channel_max=16, style_dim=8, n_mlp=1))
    separable = StudentConfig.from_teacher(teacher.cfg.channels, 16, 8, input_layer="separable")
    with pytest.raises(ValueError, match="input_layer='dense'"):
        init_from_teacher(MobileSynthesis(separable), teacher)
    narrow = StudentConfig(resolution=16, style_dim=8, channels={4: 8, 8: 8})
    with pytest.raises(ValueError, match="teacher's 4x4 widths"):
        init_from_teacher(MobileSynthesis(narrow), teacher)


@pytest.mark.parametrize("head", ["wavelet", "uptorgb"])
def test_with_output_skips_each_image_is_its_head_over_the_image_before(head):
    torch.manual_seed(0)
    teacher = StyleGAN2Config.config_f(32, channel_max=16, style_dim=8, n_mlp=1)
    plain = MobileSynthesis(StudentConfig.from_teacher(teacher.channels, 32, 8, head=head))
    skip = MobileSynthesis(plain.cfg.model_copy(update={"skip": True}))
    skip.load_state_dict(plain.state_dict())
    wplus = torch.randn(2, teacher.n_latent, 8)
    noise = [torch.randn(2, 1, r, r) for r in teacher.noise_resolutions()]
    own = plain.forward_all(wplus, noise).images
    out = skip.forward_all(wplus, noise)
    assert torch.allclose(out.images[0], own[0])
    for k in range(1, len(own)):
        up = torch.nn.functional.interpolate(out.images[k - 1], scale_factor=2, mode="bilinear")
        assert torch.allclose(out.images[k], own[k] + up, atol=1e-6)
    assert all(torch.allclose(h, dwt(i)) for h, i in zip(out.heads, out.images, strict=True))
    assert torch.equal(skip(wplus, noise), out.image)
