"""``python -m pipeline.training.reference``: how close can *any* network get to this teacher
in the distill stage's budget?

Trains the teacher's own architecture from random init, which can represent the teacher
exactly, the way the distill stage trains a student: same steps, batch, lr and schedule,
Adam betas, EMA, truncation, style mixing, the teacher's W+ and noise, the pixel and
wavelet terms of ``distill.loss`` (its LPIPS and GAN weights are not used: the reference
answers what the teacher's images allow). Every ``distill.validation.every`` steps its EMA
is scored on the distill stage's validation latents (PSNR to the teacher, median and
10th percentile), beside the teacher's mean image (the floor) and, with ``--student``, a
distilled student on the same latents. A student near the reference is limited by the
budget, not by its architecture (README, "distill").

    python -m pipeline.training.reference --student artifacts/student/student.safetensors \\
        [--params params.yaml] [--teacher artifacts/teacher/teacher.safetensors] \\
        [--steps N] [--lr LR] [--json reference.json]

Bad arguments or files exit with one line naming them (2: arguments, 1: files, params).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .. import usage
from ..checkpoints import load_teacher
from ..checkpoints.project import load_student
from ..cli import Parser, positive
from ..errors import PipelineError
from ..io import write_json
from ..metrics.fixed_latents import FixedLatents, PerSample, Synthesis, psnr
from ..models.mobile import MobileSynthesis, StudentOutput
from ..models.sampling import teacher_targets
from ..models.stylegan2 import Generator, derived_seed
from ..models.wavelets import dwt
from ..params import Distill, load_params
from .loop import ema_update, generator_lr
from .loss import DistillLoss


def validation_latents(teacher: Generator, cfg: Distill, device: torch.device | str = "cpu") -> FixedLatents:
    """The distill stage's validation latents (its seed, count, truncation, style mixing)."""
    v = cfg.validation
    return FixedLatents(teacher, v.num_samples, v.batch_size, cfg.truncation_psi, v.seed, device,
                        mixing=cfg.style_mixing_prob)


def score(model: Synthesis, latents: FixedLatents) -> dict[str, float]:
    """``psnr_median`` and ``psnr_p10`` (dB) of ``model`` to the teacher on ``latents``."""
    per_sample = PerSample()
    per_sample.add({"psnr": torch.cat([psnr(image, t.image) for t, image in latents.outputs(model)])})
    return {k: v for k, v in per_sample.result().items() if k in ("psnr_median", "psnr_p10")}


def train_reference(teacher: Generator, cfg: Distill, latents: FixedLatents, seed: int = 0,
                    on_point: Callable[[dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """Train ``Generator(teacher.cfg)`` from random init on the teacher's images for
    ``cfg.steps`` steps (the teacher's mapping network, frozen, gives both the same W+);
    returns the EMA's scores at step 0, every ``cfg.validation.every`` steps and the last."""
    device = teacher.w_avg.device
    teacher = teacher.eval().requires_grad_(False)
    torch.manual_seed(derived_seed("reference-init", seed))
    net = Generator(teacher.cfg).to(device).train()
    net.style = teacher.style  # W+ comes from the teacher: only the synthesis network learns
    params = [p for name, p in net.named_parameters() if not name.startswith("style.")]
    opt = torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas)
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    pixel_terms = cfg.loss.model_copy(update={"perceptual": 0.0, "multiscale_perceptual": 0.0, "gan": 0.0})
    loss_fn = DistillLoss(pixel_terms)
    sampler = torch.Generator().manual_seed(seed * 1000)  # the distill stage's rank-0 stream
    points = []

    def validate(step: int) -> None:
        points.append({"step": step, **score(ema.synthesis, latents)})
        if on_point:
            on_point(points[-1])

    validate(0)
    bar = usage.Progress("reference", cfg.steps, "step", sys.stderr.isatty())
    for step in range(1, cfg.steps + 1):
        for group in opt.param_groups:
            group["lr"] = generator_lr(cfg, step)
        target = teacher_targets(teacher, cfg.batch_size, cfg.truncation_psi, cfg.style_mixing_prob,
                                 sampler, device)
        image = net.synthesis(target.wplus, target.noise)
        # One level, the final image: its pixels and its Haar DWT, as a student's last level.
        loss, _ = loss_fn.generator_loss(StudentOutput(image, [dwt(image)], [image]), target)
        if not torch.isfinite(loss):
            raise PipelineError(f"the reference diverged at step {step} (loss {float(loss)}); "
                                f"lower --lr (now {cfg.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, net, cfg.ema_decay)
        bar.update(1)
        if step % cfg.validation.every == 0 or step == cfg.steps:
            validate(step)
    bar.close()
    return points


def _student(path: Path, teacher: Generator) -> MobileSynthesis:
    student, _ = load_student(path)
    if student.cfg.resolution != teacher.cfg.resolution or student.cfg.style_dim != teacher.cfg.style_dim:
        raise PipelineError(
            f"{path}: the student draws {student.cfg.resolution}x{student.cfg.resolution} from "
            f"{student.cfg.style_dim}-d styles, the teacher {teacher.cfg.resolution}x"
            f"{teacher.cfg.resolution} from {teacher.cfg.style_dim}-d: not the same teacher")
    return student.eval()


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m pipeline.training.reference", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="its distill section sets the budget (default: params.yaml)")
    parser.add_argument("--teacher", type=Path, default=Path("artifacts/teacher/teacher.safetensors"))
    parser.add_argument("--student", type=Path, help="a distilled student to score on the same latents")
    parser.add_argument("--steps", type=positive(int), help="default: distill.steps")
    parser.add_argument("--lr", type=positive(float), help="default: distill.lr")
    parser.add_argument("--seed", type=int, default=0, help="the reference's init and latents")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    try:
        cfg = load_params(args.params).distill
        updates = {k: v for k, v in (("steps", args.steps), ("lr", args.lr)) if v is not None}
        cfg = cfg.model_copy(update=updates)
        teacher = load_teacher(args.teacher, where=str(args.teacher)).generator
        student = None if args.student is None else _student(args.student, teacher)
        latents = validation_latents(teacher, cfg)
        floor = latents.mean_image_psnr()
        figures: dict = {"teacher": str(args.teacher), "steps": cfg.steps, "lr": cfg.lr,
                         "lr_schedule": cfg.lr_schedule, "batch_size": cfg.batch_size,
                         "validation_samples": len(latents), "mean_image": floor}
        print(f"{len(latents)} validation latents; PSNR to the teacher, median / p10 (dB)")
        print(f"  teacher's mean image   {floor['psnr_median']:6.2f} / {floor['psnr_p10']:6.2f}")
        if student is not None:
            figures["student"] = {"path": str(args.student), **score(student, latents)}
            s = figures["student"]
            print(f"  student                {s['psnr_median']:6.2f} / {s['psnr_p10']:6.2f}")
        t0 = time.perf_counter()
        figures["reference"] = train_reference(teacher, cfg, latents, args.seed, on_point=lambda p: print(
            f"  reference, step {p['step']:>6} {p['psnr_median']:6.2f} / {p['psnr_p10']:6.2f}", flush=True))
        figures["seconds"] = round(time.perf_counter() - t0, 1)
    except PipelineError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        write_json(args.json, figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
