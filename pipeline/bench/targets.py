"""What is timed: :class:`Target` (a network, W+ in and image out, with its MACs) from a
teacher (:class:`~pipeline.export.teacher_graph.TeacherGraph`) or a student (its export
graph, :func:`pipeline.export.graph.build`), and the random config-f pair."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import cost
from ..export.teacher_graph import TeacherGraph
from ..models.mobile import MobileSynthesis, StudentConfig, calibrate_demodulation
from ..models.stylegan2 import Generator, StyleGAN2Config, random_generator
from .timing import BenchError

RANDOM_WEIGHTS = "random (speed only)"


@dataclass
class Target:
    """One benchmarked network: ``net(wplus [B, n_latent, D]) -> image``, its physical MACs
    at batch 1 and its architecture (``teacher`` or ``student``)."""

    net: nn.Module
    arch: str
    macs: int | None
    params: int | None = None
    resolution: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    calibration: torch.Tensor | None = None  # int8 runtimes' calibration inputs

    def example(self, batch: int, seed: int = 0) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return torch.randn(self.net.input_shape(batch), generator=g)

    def calibration_inputs(self) -> torch.Tensor:
        """What int8 runtimes calibrate on: the given inputs, else 16 random W+ (N(0, I)
        styles: right for timing random weights, not for judging int8 quality)."""
        return self.calibration if self.calibration is not None else self.example(16, seed=1)


def layout_teacher(resolution: int, style_dim: int, seed: int = 0) -> Generator:
    """A tiny teacher (4 channels) that only supplies a W+ layout and fixed noise maps for
    a student given without its teacher (latency does not depend on the noise values)."""
    cfg = StyleGAN2Config.config_f(resolution, channel_max=4, style_dim=style_dim, n_mlp=1)
    return random_generator(cfg, seed, image_like=False)  # speed only


def random_student(cfg: StudentConfig, seed: int = 0) -> MobileSynthesis:
    """A random student whose fused demodulation is calibrated on random W+ (activations of
    a normal size, so no denormals or infinities distort the timings)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = MobileSynthesis(cfg).eval()
        teacher = layout_teacher(cfg.resolution, cfg.style_dim, seed)
        if cfg.demodulation == "fused":
            wplus = torch.randn(2, teacher.cfg.n_latent, cfg.style_dim)
            calibrate_demodulation(student, [(wplus, teacher.make_noise(1, "const"))])
    return student


def config_f_pair(resolution: int = 1024, channel_multiplier: int = 2, seed: int = 0,
                  style_dim: int = 512, n_mlp: int = 8,
                  channel_max: int = 512) -> tuple[Generator, MobileSynthesis]:
    """A config-f teacher with random weights and its default full student
    (``StudentConfig.from_teacher``: the teacher's channels per feature resolution, fused
    demodulation; folded when the graph is built), random, demodulation calibrated."""
    cfg = StyleGAN2Config.config_f(resolution, channel_multiplier, channel_max, style_dim, n_mlp)
    teacher = random_generator(cfg, seed, image_like=False)
    student = random_student(StudentConfig.from_teacher(cfg.channels, resolution, style_dim), seed)
    return teacher, student


def _student_cost(cfg: StudentConfig) -> dict[str, int] | None:
    try:
        return cost.count_student(cfg)
    except cost.CostError:
        return None


def prepare(model: Any, teacher: Generator | None = None, seed: int = 0, check: bool = True) -> Target:
    """A :class:`Target` from a teacher (``Generator`` or ``StyleGAN2Config``: random weights),
    a student (``MobileSynthesis``, or ``StudentConfig``: random weights) or a Target.

    Modules are copied (moved to CPU, float32, eval): the caller's are left as they are.
    A student's W+ layout and fixed noise come from ``teacher`` (or a tiny layout teacher).
    With ``check``, the graph's output is compared once with the training module's
    (``info["graph_max_abs_err"]``, batch 1).
    """
    if isinstance(model, Target):
        return model
    if isinstance(model, StyleGAN2Config):
        model = random_generator(model, seed, image_like=False)
    if isinstance(model, StudentConfig):
        model = random_student(model, seed)
    if isinstance(model, Generator):
        g = copy.deepcopy(model).cpu().float().eval()
        c = g.cfg
        counted = cost.count("teacher", c.resolution, list(c.layer_widths), style_dim=c.style_dim,
                             n_mlp=c.n_mlp)
        target = Target(TeacherGraph(g).eval(), "teacher", counted["macs"], counted["params"],
                        c.resolution, {"graph": "TeacherGraph (Generator.synthesis, const noise)"})
        if check:
            x = target.example(1, seed)
            with torch.no_grad():
                want = g.synthesis(x, g.make_noise(1, "const"))
                target.info["graph_max_abs_err"] = float((target.net(x) - want).abs().max())
        return target
    if isinstance(model, MobileSynthesis):
        from ..export.graph import build, reference

        s = copy.deepcopy(model).cpu().float().eval()
        c = s.cfg
        if teacher is None:
            teacher = layout_teacher(c.resolution, c.style_dim, seed)
        teacher = copy.deepcopy(teacher).cpu().float().eval()
        net = build(s, teacher, "wplus", output_range=(-1.0, 1.0))
        counted = _student_cost(c)
        target = Target(net, "student", counted and counted["macs"], counted and counted["params"],
                        c.resolution, {"graph": "pipeline.export.graph (folded, last head)"})
        if check:
            x = target.example(1, seed)
            with torch.no_grad():
                want = reference(s, teacher, "wplus", x, output_range=(-1.0, 1.0))
                target.info["graph_max_abs_err"] = float((net(x) - want).abs().max())
        return target
    raise BenchError(f"cannot benchmark a {type(model).__name__}: give a Generator, a "
                     f"MobileSynthesis, a StyleGAN2Config, a StudentConfig or a Target")

