"""The distill stage's training loop: the teacher generates every target on the fly.

Per step: sample z (mixing, truncation) -> teacher W+, noise, image -> student
(all heads) -> generator phase -> discriminator phase (+ lazy R1) -> EMA update.
Every ``validation.every`` steps the EMA student is compared with the teacher on
fixed latents and fixed noise (LPIPS, pixel L1, KID); every ``checkpoint_every``
steps a snapshot is written (see checkpoint.py) so a killed run resumes exactly.

With ``elastic.enabled`` (Anycost GAN's adaptive-channel training), from
``elastic.start_step`` on the channels are sorted by importance once and each step
trains one sampled sub-network (widths, output resolution) on the shared weights:
the distillation loss against the teacher at that resolution, plus the consistency
loss (MSE + LPIPS) to the full network's output, with a discriminator that also sees
the architecture's encoding. The architecture of a step depends only on (seed, step),
so every process samples the same one and a resumed run continues the same sequence.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from .. import usage
from ..code import ROOT, import_closure
from ..data import RealImages
from ..errors import PipelineError
from ..metrics import stand_in_name
from ..metrics.distances import kid
from ..metrics.fixed_latents import FixedLatents, PerSample, distances
from ..models.discriminator import Discriminator
from ..models.elastic import (
    Arch,
    Elastic,
    arch_dim,
    permute_,
    permute_optimizer_,
    sample_arch,
    sort_channels_,
    subnet,
    uniform_widths,
)
from ..models.mobile import MobileSynthesis, StudentConfig, calibrate_demodulation, init_from_teacher
from ..models.sampling import downsample, teacher_styles, teacher_targets, upsample
from ..models.stylegan2 import Generator, derived_seed
from ..params import Distill
from . import checkpoint, dist
from .loss import DistillLoss

log = logging.getLogger(__name__)

CALIBRATION_SAMPLES = 64  # W+ the fused demodulation is calibrated on (in validation chunks)


class DivergenceError(PipelineError):
    """The loss became NaN/inf: training stops and the last good snapshot is kept."""


def student_config(cfg: Distill, teacher: Generator) -> StudentConfig:
    """The student for this teacher; incompatible settings fail with the key to fix."""
    student = _student_config(cfg, teacher)
    want = teacher.cfg.channels[4]
    if cfg.student.init == "teacher" and (student.input_layer != "dense"
                                          or student.channels[4] != want):
        raise PipelineError(
            f"distill.student.init: teacher needs distill.student.input_layer: dense and the "
            f"teacher's {want} channels at 4x4, got {student.input_layer} with "
            f"{student.channels[4]}; set distill.student.init: random")
    return student


def _student_config(cfg: Distill, teacher: Generator) -> StudentConfig:
    t = teacher.cfg
    arch = cfg.student
    try:
        if arch.channels is not None:
            return StudentConfig(resolution=t.resolution, style_dim=t.style_dim,
                                 channels=arch.channels, demodulation=arch.demodulation,
                                 head=arch.head, skip=arch.skip, input_layer=arch.input_layer)
        base = StudentConfig.from_teacher(t.channels, t.resolution, t.style_dim)
        channels = {r: max(4, round(c * arch.width / 4) * 4) for r, c in base.channels.items()}
        return StudentConfig(resolution=t.resolution, style_dim=t.style_dim, channels=channels,
                             demodulation=arch.demodulation, head=arch.head, skip=arch.skip,
                             input_layer=arch.input_layer)
    except ValueError as e:  # pydantic's text spans lines and links its docs: one line
        why = "; ".join(err["msg"].removeprefix("Value error, ") for err in
                        e.errors(include_url=False)) if isinstance(e, ValidationError) else str(e)
        raise PipelineError(
            f"distill.student does not fit the {t.resolution}x{t.resolution} teacher: {why}"
        ) from None


def training_code() -> list[Path]:
    """The code a training step runs: this loop's imports and the metric networks the stage
    passes in. Left out: code that only moves bytes (fetching, checkpoint formats: the
    teacher is identified by its sha256) and the params schema (the settings' values are
    digested themselves)."""
    files = import_closure(__name__, "pipeline.metrics.perceptual", "pipeline.metrics.inception")
    left_out = [ROOT / "pipeline" / name for name in ("fetch", "checkpoints", "params.py")]
    return [p for p in files if not any(p.is_relative_to(x) for x in left_out)]


def code_digest() -> str:
    """A snapshot made by other training code is not resumed; editing anything else is
    free (a metric file, the export stage...)."""
    digest = hashlib.sha256()
    for path in training_code():
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def settings_digest(cfg: Distill, teacher_sha256: str, world: int) -> str:
    """What a snapshot must agree on to be resumed: the settings (all but the run length and
    cadence), the teacher, the number of processes and the training code."""
    data = cfg.model_dump(mode="json", exclude={"steps", "checkpoint_every", "log_every"})
    data["validation"].pop("every")
    data["validation"].pop("batch_size")  # chunking: the same figures, less memory
    data["adversarial"].pop("real_workers", None)  # how many processes decode: not what they draw
    blob = json.dumps({"distill": data, "teacher": teacher_sha256, "world": world,
                       "code": code_digest()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    return {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]


@dataclass
class History:
    """Validation figures per step (also the DVC plot) and the loss curve."""

    validation: list[dict[str, float]] = field(default_factory=list)
    losses: list[dict[str, float]] = field(default_factory=list)


@dataclass
class DistillResult:
    student: MobileSynthesis  # the EMA weights
    history: History
    metrics: dict[str, Any]


class Validator:
    """Fixed latents + fixed noise: the EMA student against the teacher, every time the same
    (pipeline.metrics.fixed_latents: a smaller sub-network is up-sampled to full size)."""

    def __init__(self, teacher: Generator, cfg: Distill, lpips, features,
                 device: torch.device) -> None:
        v = cfg.validation
        # The training distribution (truncation, style mixing): where a student explodes.
        self.latents = FixedLatents(teacher, v.num_samples, v.batch_size, cfg.truncation_psi,
                                    v.seed, device, mixing=cfg.style_mixing_prob)
        self.lpips, self.features = lpips, features
        self.kid = stand_in_name("kid", features.stand_in)
        self.teacher_feats = torch.cat([self._feats(t.image) for t in self.latents])
        self.baseline = self.latents.mean_image_psnr()  # the constant a student must beat

    @torch.no_grad()
    def _feats(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images.float()).double().cpu()

    @torch.no_grad()
    def __call__(self, student: MobileSynthesis) -> dict[str, float]:
        """``lpips_<net>``, ``mse``, ``pixel_l1`` and KID to the teacher."""
        means, feats = PerSample(), []
        for t, image in self.latents.outputs(student):
            means.add(distances(image, t.image, self.lpips))
            feats.append(self._feats(image))
        kid_mean, _ = kid(self.teacher_feats.numpy(), torch.cat(feats).numpy(),
                          num_subsets=50, subset_size=min(1000, len(self.latents)))
        return {**means.result(), self.kid: kid_mean}

    def grid_pairs(self, student: MobileSynthesis, count: int) -> torch.Tensor:
        """Teacher row above student row, same latents (the first ``count``, chunk by chunk)."""
        teacher, images = [], []
        for t, image in self.latents.outputs(student):
            teacher.append(t.image.float().cpu())
            images.append(image.cpu())
            if sum(len(x) for x in images) >= count:
                break
        return torch.cat([torch.cat(teacher)[:count], torch.cat(images)[:count]])


def generator_lr(cfg: Distill, step: int) -> float:
    """The generator's lr at ``step`` (1-based): constant, or cosine from lr to 0."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - 1) / cfg.steps))


def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter; buffers copied."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers(), strict=True):
            e.copy_(b)


def distill(
    cfg: Distill,
    teacher: Generator,
    teacher_sha256: str,
    snapshot_dir: str | Path,
    lpips,
    features,
    procs: dist.Dist,
    real_images: RealImages | None = None,
    on_log: Callable[[dict[str, float], int], None] | None = None,
    on_validate: Callable[[dict[str, float], int, torch.Tensor], None] | None = None,
    progress: bool = True,
) -> DistillResult:
    """Train a student to imitate ``teacher``; returns the EMA student and its history.

    ``lpips`` is the perceptual network (loss and validation), ``features`` the KID
    feature extractor, both already on ``procs.device`` (the device the process group
    chose: decided once, before anything is moved); ``real_images`` gives the discriminator real
    images (BlazeStyleGAN) instead of teacher images: the batch of step s depends only on
    (seed, rank, s), so a resumed run draws the reals an uninterrupted one does. Callbacks run on rank 0 only.
    """
    ctx = procs
    device = ctx.device
    torch.manual_seed(derived_seed("distill-init", cfg.seed))  # not the latents' stream
    student_cfg = student_config(cfg, teacher)
    if cfg.batch_size % ctx.world:
        raise PipelineError(
            f"distill.batch_size ({cfg.batch_size}) must divide evenly over {ctx.world} processes"
        )
    batch = cfg.batch_size // ctx.world
    r = student_cfg.resolution
    if ctx.main:
        usage.announce("distill", f"{cfg.steps} steps x batch {cfg.batch_size} at {r}x{r} on "
                       f"{device.type} ({ctx.world} process(es)), validating "
                       f"{cfg.validation.num_samples} samples every {cfg.validation.every} steps")
    teacher = teacher.to(device).eval().requires_grad_(False)
    student = MobileSynthesis(student_cfg).to(device).train()
    if cfg.student.init == "teacher":
        init_from_teacher(student, teacher)
    calibrate_demodulation(student, teacher_styles(  # overwritten when resuming
        teacher, CALIBRATION_SAMPLES, cfg.validation.batch_size, cfg.truncation_psi,
        torch.Generator().manual_seed(cfg.seed), device))
    ema = copy.deepcopy(student).eval().requires_grad_(False)
    el = cfg.elastic
    elastic = Elastic(student) if el.enabled else None
    smallest = Arch(uniform_widths(student_cfg, min(el.ratios)),
                    el.min_resolution or student_cfg.resolution)
    if elastic is not None and smallest.resolution > student_cfg.resolution:
        raise PipelineError(f"distill.elastic.min_resolution ({el.min_resolution}) must be at "
                            f"most the {student_cfg.resolution}x{student_cfg.resolution} output")
    use_gan = cfg.loss.gan > 0
    cond_dim = arch_dim(student_cfg) if elastic is not None and el.condition_discriminator else 0
    disc = Discriminator(teacher.cfg.resolution, channel_max=cfg.adversarial.channel_max,
                         cond_dim=cond_dim).to(device) if use_gan else None
    # Lazy regularisation: R1 every N steps, so Adam sees a scaled lr/betas (StyleGAN2 B.1).
    r1_ratio = cfg.adversarial.r1_every / (cfg.adversarial.r1_every + 1)
    opt_g = torch.optim.Adam(student.parameters(), lr=cfg.lr, betas=cfg.betas)
    lr_d = cfg.adversarial.lr or cfg.lr
    opt_d = torch.optim.Adam(disc.parameters(), lr=lr_d * r1_ratio,
                             betas=tuple(b**r1_ratio for b in cfg.betas)) if use_gan else None
    amp_dtype = autocast_dtype(cfg.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    loss_fn = DistillLoss(cfg.loss, lpips, cfg.adversarial.augment, cfg.adversarial.r1_gamma)
    sampler = torch.Generator().manual_seed(cfg.seed * 1000 + ctx.rank)
    digest = settings_digest(cfg, teacher_sha256, ctx.world)
    validator = Validator(teacher, cfg, lpips, features, device) if ctx.main else None
    history = History()
    start_step, metrics_start = 0, None
    done = {"images": 0, "seconds": 0.0}  # by the runs before this one (from the snapshot)

    state = checkpoint.load_latest(snapshot_dir, digest)
    if state is not None:
        student.load_state_dict(state["student"])
        ema.load_state_dict(state["ema"])
        opt_g.load_state_dict(state["opt_g"])
        if use_gan:
            disc.load_state_dict(state["disc"])
            opt_d.load_state_dict(state["opt_d"])
        scaler.load_state_dict(state["scaler"])
        sampler.set_state(state["samplers"][ctx.rank])
        torch.set_rng_state(state["torch_rng"])
        history = History(state["validation"], state["losses"])
        start_step, metrics_start = state["step"], state["metrics_start"]
        done = state.get("throughput", done)
    if start_step > cfg.steps:
        raise PipelineError(
            f"the newest snapshot is at step {start_step}, past distill.steps={cfg.steps}; "
            f"raise distill.steps or remove {snapshot_dir}"
        )

    def validate(step: int) -> dict[str, float]:
        figures = validator(ema)
        if elastic is not None and step > el.start_step:
            small = validator(subnet(ema, smallest.widths, smallest.resolution))
            figures.update({f"{k}_smallest": v for k, v in small.items()})
        history.validation.append({"step": step, **figures})
        if on_validate:
            on_validate(figures, step, validator.grid_pairs(ema, cfg.validation.grid_samples))
        return figures

    if ctx.main and metrics_start is None:
        metrics_start = validate(0)
    autocast = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else (
        contextlib.nullcontext)
    wavelet_heads = student_cfg.head == "wavelet" or student_cfg.skip  # skips: DWT of images
    bar = usage.Progress("distill", cfg.steps, "step", progress, start_step, quiet=not ctx.main)
    t0, images_seen = time.perf_counter(), 0
    full_arch = Arch(student_cfg.full_widths, student_cfg.resolution)
    reals = None if real_images is None else real_images.batches(
        batch, start_step + 1, cfg.seed * 1000 + ctx.rank, cfg.adversarial.real_workers)
    step = start_step
    with _interrupt_says_what_is_kept(lambda: step, snapshot_dir):
        for step in range(start_step + 1, cfg.steps + 1):
            target = teacher_targets(teacher, batch, cfg.truncation_psi, cfg.style_mixing_prob,
                                     sampler, device)
            real = target.image if reals is None else next(reals).to(device)
            arch, cond = full_arch, None
            if elastic is not None and step > el.start_step:
                if step == el.start_step + 1:  # once: most important channels first
                    order = sort_channels_(student)
                    permute_(dict(ema.named_parameters()), order)
                    permute_optimizer_(opt_g, student, order)
                arch = sample_arch(student_cfg, random.Random(f"{cfg.seed}/{step}"), el.ratios,
                                   el.sampling, el.min_resolution)
            if cond_dim:
                cond = arch.encode(student_cfg).to(device).expand(batch, -1)
            if arch.resolution < student_cfg.resolution:  # D sees reals as blurred as the fakes
                real = upsample(downsample(real, arch.resolution), student_cfg.resolution)

            # Generator phase: imitate the teacher (and fool D).
            for group in opt_g.param_groups:
                group["lr"] = generator_lr(cfg, step)
            if disc is not None:
                disc.requires_grad_(False)
            with autocast():
                if arch == full_arch:
                    out = student.forward_all(target.wplus, target.noise)
                    sub_target = target
                else:
                    out = elastic(arch.widths, arch.resolution, "forward_all", target.wplus,
                                  target.noise)
                    sub_target = target._replace(image=downsample(target.image, arch.resolution))
                loss_g, parts = loss_fn.generator_loss(out, sub_target, disc, wavelet_heads, sampler,
                                                       cond)
                if arch != full_arch:
                    with torch.no_grad():
                        full = downsample(student(target.wplus, target.noise), arch.resolution)
                    loss_c, c_parts = loss_fn.consistency_loss(out.image, full, el.consistency_mse,
                                                               el.consistency_lpips)
                    loss_g = loss_g + loss_c
                    parts.update(c_parts, total_g=loss_g)
            _check_finite(loss_g, step, snapshot_dir)
            opt_g.zero_grad(set_to_none=True)
            scaler.scale(loss_g).backward()
            dist.average_gradients(student, ctx)
            scaler.step(opt_g)

            # Discriminator phase: teacher (or real) images vs the student's.
            if disc is not None:
                disc.requires_grad_(True)
                opt_d.zero_grad(set_to_none=True)
                adv = cfg.adversarial
                r1_every = adv.r1_every if step % adv.r1_every == 0 and adv.r1_gamma > 0 else 0
                for term in loss_fn.discriminator_terms(disc, out.image.float(), real, sampler, cond,
                                                        r1_every):
                    with autocast():
                        loss_d, d_parts = term()
                    _check_finite(loss_d, step, snapshot_dir)
                    scaler.scale(loss_d).backward()
                    parts.update(d_parts)
                parts["gan_d"] = parts["gan_d_fake"] + parts["gan_d_real"]
                dist.average_gradients(disc, ctx)
                scaler.step(opt_d)
            scaler.update()
            ema_update(ema, student, cfg.ema_decay)
            images_seen += batch * ctx.world

            if step % cfg.log_every == 0 or step == cfg.steps:
                row = {k: dist.mean(v.item(), ctx, device) for k, v in parts.items()}
                if ctx.main:
                    history.losses.append({"step": step, **row})
                    if on_log:
                        on_log(row, step)
            if ctx.main and (step % cfg.validation.every == 0 or step == cfg.steps):
                validate(step)
            if step % cfg.checkpoint_every == 0 or step == cfg.steps:
                if ctx.main:
                    checkpoint.save_snapshot(snapshot_dir, step, {
                        "digest": digest, "student": student.state_dict(), "ema": ema.state_dict(),
                        "opt_g": opt_g.state_dict(), "scaler": scaler.state_dict(),
                        "disc": disc.state_dict() if disc is not None else {},
                        "opt_d": opt_d.state_dict() if opt_d is not None else {},
                        "samplers": _gather_sampler_states(sampler, ctx),
                        "torch_rng": torch.get_rng_state(),
                        "validation": history.validation, "losses": history.losses,
                        "metrics_start": metrics_start,
                        "throughput": {"images": done["images"] + images_seen,
                                       "seconds": done["seconds"] + time.perf_counter() - t0},
                    })
                else:
                    _gather_sampler_states(sampler, ctx)
                dist.barrier(ctx)
            bar.update(1, g=f"{parts['total_g'].item():.3f}")
    bar.close()
    if ctx.main and on_validate and start_step == cfg.steps and history.validation:
        # Resumed at the last step: nothing to train, but the caller still gets its grid.
        on_validate(history.validation[-1], start_step,
                    validator.grid_pairs(ema, cfg.validation.grid_samples))
    if reals is not None:
        reals.close()  # stops the decoding workers
    elapsed = time.perf_counter() - t0
    end = history.validation[-1] if history.validation else {}
    lp, kid_name = lpips.name, validator.kid if validator else "kid"
    metrics = {
        "steps": cfg.steps,
        "resumed_from_step": start_step,
        # over the whole run, resumed or not (a run resumed at its last step trains nothing)
        "images_per_second": round((done["images"] + images_seen) / (done["seconds"] + elapsed), 3)
        if done["images"] + images_seen else 0.0,
        "train_seconds": round(elapsed, 2),
        **{f"{name}_{when}": figures.get(key, math.nan) if figures else math.nan
           for name, key in ((f"{lp}_to_teacher", lp), ("pixel_l1", "pixel_l1"),
                             ("pixel_l1_p90", "pixel_l1_p90"), ("pixel_l1_max", "pixel_l1_max"),
                             ("mse", "mse"), ("psnr_to_teacher", "psnr_median"),
                             ("psnr_to_teacher_p10", "psnr_p10"), ("exploded", "exploded"),
                             ("ssim_to_teacher", "ssim"), ("ssim_to_teacher_p10", "ssim_p10"),
                             (kid_name, kid_name))
           for when, figures in (("start", metrics_start), ("end", end))},
        **{f"ms_ssim_to_teacher_{when}": figures["ms_ssim"]
           for when, figures in (("start", metrics_start), ("end", end))
           if figures and "ms_ssim" in figures},
        "validation_samples": cfg.validation.num_samples,
        **({f"psnr_mean_image{'' if k == 'psnr_median' else '_p10'}": v
            for k, v in validator.baseline.items()} if validator else {}),
        **({f"{lp}_to_teacher_smallest_end": end.get(f"{lp}_smallest", math.nan)}
           if elastic is not None else {}),
        "student_params": sum(p.numel() for p in ema.parameters()),
        "world_size": ctx.world,
    }
    return DistillResult(ema.cpu(), history, metrics)


def _gather_sampler_states(sampler: torch.Generator, ctx: dist.Dist) -> list[torch.Tensor]:
    """Every rank's sampling RNG state (rank 0 writes them all into the snapshot)."""
    state = sampler.get_state()
    if ctx.world == 1:
        return [state]
    import torch.distributed as tdist

    states: list[Any] = [None] * ctx.world
    tdist.all_gather_object(states, state)
    return states


@contextlib.contextmanager
def _interrupt_says_what_is_kept(step: Callable[[], int], snapshot_dir: str | Path) -> Iterator[None]:
    """Ctrl-C (or SIGTERM: the stage CLI turns it into one) ends training with one line
    saying where it stopped and what a rerun resumes from, not a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        last = checkpoint.snapshots(snapshot_dir)
        kept = (f"the snapshot {last[-1].name} is kept: run again to resume from it" if last
                else "no snapshot was written yet: a rerun starts over")
        raise KeyboardInterrupt(f"interrupted at step {step()}; {kept}") from None


def _check_finite(loss: torch.Tensor, step: int, snapshot_dir: str | Path) -> None:
    if not torch.isfinite(loss):
        last = checkpoint.snapshots(snapshot_dir)
        kept = f"the last good snapshot is {last[-1]}" if last else "no snapshot was written yet"
        raise DivergenceError(
            f"loss became {loss.item()} at step {step}: training diverged and stopped; {kept}. "
            f"Lower distill.lr or the loss weights, or use precision fp32."
        )
