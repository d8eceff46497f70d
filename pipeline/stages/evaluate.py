"""evaluate: the teacher, the full student and every searched configuration
(with its uniform-ratio baseline), side by side on the same latents and noise.

    teacher + student + search configs
      -> models (sub-networks physically sliced, demodulation folded)
      -> N fixed latents (pipeline.metrics.fixed_latents, as distill and search): each
         model's images at full size -> Inception features, LPIPS, pixel L1 and MSE to
         the teacher
      -> FID/KID against the reference statistics (teacher samples from other latents,
         a real-image folder, or a pytorch-fid .npz; cached)
      -> params/MACs (pipeline.cost), latency in PyTorch / ONNX Runtime / ExecuTorch
         (pipeline.bench), the 1024x1024 teacher/student latency ratio
      -> metrics/evaluate.json, plots/evaluate/*.csv, artifacts/evaluate/ (report.md,
         grid.png, pareto.png)

Figures computed with stand-in (random) Inception or LPIPS weights carry ``_randinit``
in their names, in the metrics file, in MLflow and in the report.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import cost, usage
from ..bench.measurements import describe
from ..bench.suite import student_efficiency
from ..checkpoints import load_teacher
from ..checkpoints.project import load_student
from ..data import RealImages
from ..errors import PipelineError
from ..headline import Comparison, headline
from ..images import save_grid
from ..io import atomic_dir, atomic_path, sha256_file, write_json
from ..metrics import stand_in_name
from ..metrics.distances import frechet_distance_to, kid
from ..metrics.fid import ReferenceStats, cached_stats, check_sample_count, load_npz
from ..metrics.fixed_latents import FixedLatents, PerSample, distances, psnr
from ..metrics.inception import InceptionFeatures
from ..metrics.networks import inception_network, lpips_network
from ..metrics.perceptual import LPIPS
from ..models.elastic import subnet
from ..models.mobile import MobileSynthesis, fold_demodulation
from ..models.sampling import teacher_targets
from ..models.stylegan2 import Generator
from ..params import Evaluate, Params
from . import Context, StageResult, compare_with_last_run, option, stand_ins

log = logging.getLogger(__name__)
NAME = "evaluate"
SHARED = ("metric_networks",)
MOBILESTYLEGAN_MAC_RATIO = 9.5  # the paper's teacher/student MAC ratio at 1024


@dataclass
class Model:
    """One evaluated network: W+ and noise in, image out."""

    name: str
    kind: str  # teacher | student | searched | uniform
    net: Callable[[torch.Tensor, list[torch.Tensor]], torch.Tensor]
    module: torch.nn.Module
    resolution: int
    cost: dict[str, Any]
    budget: str | None = None

    @property
    def gmacs(self) -> float:
        return self.cost["macs"] / 1e9


def build_models(teacher: Generator, student: MobileSynthesis, configs: dict | None) -> list[Model]:
    """Teacher, full student, and per searched budget its configuration and uniform baseline."""
    r, d = teacher.cfg.resolution, teacher.cfg.style_dim

    def student_model(name: str, kind: str, widths, res, budget=None) -> Model:
        net = fold_demodulation(subnet(student, widths, res)).eval()
        c = cost.count_student(student.cfg, widths or student.cfg.full_widths, res)
        return Model(name, kind, net, net, res or r, c, budget)

    models = [
        Model("teacher", "teacher", teacher.synthesis, teacher, r,
              cost.count("teacher", r, teacher.cfg.full_widths, style_dim=d,
                         n_mlp=teacher.cfg.n_mlp)),
        student_model("full", "student", None, None),
    ]
    for name, entry in (configs or {}).get("budgets", {}).items():
        if entry.get("trivial"):
            continue  # the full network: already evaluated as "full"
        try:
            models.append(student_model(name, "searched", entry["channels"], entry["resolution"],
                                        name))
            u = entry["uniform"]
            models.append(student_model(f"{name}_uniform", "uniform", u["channels"],
                                        u["resolution"], name))
        except (KeyError, TypeError, ValueError) as e:
            raise PipelineError(f"search configs, budget {name!r}: does not fit the student "
                                f"({type(e).__name__}: {e})") from None
    return models


@dataclass
class Paths:
    teacher: str = option("artifacts/teacher/teacher.safetensors", "the fetched teacher")
    student: str = option("artifacts/student/student.safetensors", "the distilled student")
    search: str = option("artifacts/search/configs.json", "searched configurations (optional)")
    out: str = option("artifacts/evaluate", "report folder", output=True)
    plots: str = option("plots/evaluate", "plot CSV folder", output=True)


@dataclass
class Samples:
    """Per model: Inception features, mean distances to the teacher on the same latents,
    and the first images for the grid."""

    features: dict[str, list[np.ndarray]] = field(default_factory=dict)
    means: dict[str, PerSample] = field(default_factory=dict)
    grid: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_sum: torch.Tensor | float = 0.0  # clamped teacher images summed: the mean-image baseline


@torch.no_grad()
def sample_models(models: list[Model], latents: FixedLatents, features: InceptionFeatures,
                  lpips: LPIPS, grid_samples: int, progress: bool = True) -> Samples:
    """Every model on every chunk of ``latents`` (the teacher runs once per chunk)."""
    out = Samples()
    r = latents.resolution
    usage.announce("evaluate", f"{len(latents)} samples x {len(models)} models at {r}x{r} on "
                   f"{torch.device(latents.device).type}, {latents.batch_size} at a time")
    bar = usage.Progress("evaluate", len(latents), "img", progress)
    for t in latents:
        out.teacher_sum = out.teacher_sum + t.image.float().clamp(-1, 1).sum(0)
        for m in models:
            image = latents.full_size(t.image if m.kind == "teacher" else m.net(t.wplus, t.noise))
            out.features.setdefault(m.name, []).append(features(image).double().cpu().numpy())
            out.means.setdefault(m.name, PerSample()).add(distances(image, t.image, lpips))
            if m.name not in out.grid:
                out.grid[m.name] = image[:grid_samples].cpu()
        bar.update(len(t.image))
    bar.close()
    return out


def reference_stats(cfg: Evaluate, teacher: Generator, teacher_sha256: str,
                    features: InceptionFeatures, cache_dir: Path, device: torch.device,
                    progress: bool = True) -> tuple[ReferenceStats, bool]:
    """The reference of FID/KID and whether it came from the cache."""
    ref = cfg.reference
    common = {"features": features.name, "feature_weights": features.weights_id,
              "resolution": teacher.cfg.resolution}
    if ref.source == "npz":
        stats = load_npz(ref.path)
        return stats, False
    if ref.source == "teacher":
        parts = {"source": "teacher", "teacher": teacher_sha256, "n": ref.num_samples,
                 "seed": ref.seed, "psi": cfg.truncation_psi, **common}

        @torch.no_grad()
        def compute() -> np.ndarray:
            g = torch.Generator().manual_seed(ref.seed)
            feats, done = [], 0
            bar = usage.Progress("reference", ref.num_samples, "img", progress)
            while done < ref.num_samples:
                n = min(cfg.batch_size, ref.num_samples - done)
                t = teacher_targets(teacher, n, cfg.truncation_psi, 0.0, g, device)
                feats.append(features(t.image.float()).double().cpu().numpy())
                done += n
                bar.update(n)
            bar.close()
            return np.concatenate(feats)

        return cached_stats(cache_dir, parts, f"teacher samples (seed {ref.seed})", compute)
    images = RealImages(ref.path, teacher.cfg.resolution)
    files = images.files[: ref.num_samples]
    parts = {"source": "folder", "files": [(str(p), p.stat().st_size, p.stat().st_mtime_ns)
                                           for p in files], **common}

    @torch.no_grad()
    def compute_folder() -> np.ndarray:
        feats = []
        bar = usage.Progress("reference", len(files), "img", progress)
        for start in range(0, len(files), cfg.batch_size):
            batch = torch.stack([images.load(p) for p in files[start:start + cfg.batch_size]])
            feats.append(features(batch.to(device)).double().cpu().numpy())
            bar.update(len(batch))
        bar.close()
        return np.concatenate(feats)

    return cached_stats(cache_dir, parts, f"{len(files)} images in {ref.path}", compute_folder)


def quality(feats: np.ndarray, ref: ReferenceStats, cfg: Evaluate, stand_in: bool) -> dict[str, float]:
    """FID (and KID when the reference keeps its features), named by the Inception weights."""
    out = {stand_in_name("fid", stand_in): frechet_distance_to(feats, ref.mu, ref.sigma)}
    if ref.features is not None:
        m = min(cfg.kid_subset_size, len(feats), len(ref.features))
        mean, std = kid(feats, ref.features, cfg.kid_subsets, m, seed=cfg.seed)
        out.update({stand_in_name("kid", stand_in): mean, stand_in_name("kid_std", stand_in): std})
    return out


def evaluate_models(cfg: Evaluate, teacher: Generator, student: MobileSynthesis,
                    configs: dict | None, teacher_sha256: str, lpips: LPIPS,
                    features: InceptionFeatures, cache_dir: str | Path, device: torch.device,
                    progress: bool = True) -> tuple[list[Model], dict[str, Any], Samples]:
    """Quality and cost of every model; returns (models, per-model figures, samples)."""
    deficient = check_sample_count(cfg.num_samples, cfg.low_sample_fid, "evaluated models",
                                   "evaluate.num_samples")
    teacher, student = teacher.to(device).eval(), student.to(device).eval()
    models = build_models(teacher, student, configs)
    ref, cached = reference_stats(cfg, teacher, teacher_sha256, features, Path(cache_dir) / "fid-stats",
                                  device, progress)
    if ref.n is not None:
        deficient |= check_sample_count(ref.n, cfg.low_sample_fid, f"reference ({ref.source})",
                                        "evaluate.reference.num_samples")
    latents = FixedLatents(teacher, cfg.num_samples, cfg.batch_size, cfg.truncation_psi, cfg.seed,
                           device, keep=False)
    samples = sample_models(models, latents, features, lpips, cfg.grid_samples, progress)
    figures: dict[str, Any] = {}
    for m in models:
        feats = np.concatenate(samples.features[m.name])
        figures[m.name] = {
            **quality(feats, ref, cfg, features.stand_in), **samples.means[m.name].result(),
            "params": m.cost["params"], "macs": m.cost["macs"], "macs_anycost": m.cost["macs_anycost"],
            "resolution": m.resolution,
        }
    baseline = latents.mean_image_psnr(samples.teacher_sum / len(latents))
    figures["_meta"] = {"samples": len(latents), "psnr_mean_image_median": baseline["psnr_median"],
                        "psnr_mean_image_p10": baseline["psnr_p10"], "reference_samples": ref.n or 0,
                        "reference_cached": int(cached), "fid_rank_deficient": int(deficient),
                        "stand_in_features": int(features.stand_in),
                        "stand_in_lpips": int(lpips.stand_in),
                        "reference": ref.source, "fid_name": stand_in_name("fid", features.stand_in),
                        "lpips_name": lpips.name}
    return models, figures, samples


# -- outputs -------------------------------------------------------------------------
def grid_image(models: list[Model], samples: Samples) -> torch.Tensor:
    """Rows: samples; columns: teacher | full student | each budget (same latents)."""
    columns = [samples.grid[m.name] for m in models if m.kind != "uniform"]
    return torch.stack(columns, 1).flatten(0, 1)


def write_quality_csv(models: list[Model], figures: dict[str, Any], path: Path) -> None:
    meta = figures["_meta"]
    rows = [{"model": m.name, "kind": m.kind, "gmacs": m.gmacs,
             "fid": figures[m.name][meta["fid_name"]], "lpips": figures[m.name][meta["lpips_name"]]}
            for m in models]
    _write_csv(rows, path)


def _write_csv(rows: list[dict[str, Any]], path: Path, columns: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@torch.no_grad()
def runtime_psnr(files: dict[str, dict[str, str]], teacher: Generator, cfg: Evaluate,
                 ) -> dict[str, dict[str, float]]:
    """Median PSNR to the teacher of every file the latency table timed (fp32, int8, fp16), as
    its runtime runs it, on ``latency.quality_samples`` latents: the y of the latency-vs-
    quality Pareto. The files bake in the teacher's fixed noise, so the teacher draws with it."""
    from ..export.formats import onnx_runner, pte_runner
    from ..export.quantize import latent_inputs
    from ..models.sampling import upsample

    teacher = teacher.cpu()
    wplus = latent_inputs(teacher, cfg.latency.quality_samples, cfg.seed, cfg.truncation_psi)["wplus"]
    noise = teacher.make_noise(1, "const")
    chunks = wplus.split(cfg.batch_size)
    target = [teacher.synthesis(w, noise) for w in chunks]
    out: dict[str, dict[str, float]] = {}
    for name, by_runtime in files.items():
        for rt, path in by_runtime.items():
            onnx = rt.startswith("onnxruntime")
            run = onnx_runner(Path(path), cfg.latency.threads) if onnx else pte_runner(Path(path))
            half = rt.endswith("-fp16")  # a half-precision program takes float16

            def image(w: torch.Tensor, run=run, onnx=onnx, half=half) -> torch.Tensor:  # .pte: batch 1
                w = w.half() if half else w
                return run(w) if onnx else torch.cat([run(x) for x in w.split(1)])

            scores = torch.cat([psnr(upsample(image(w).float(), t.shape[-1]), t)
                                for w, t in zip(chunks, target, strict=True)])
            out.setdefault(name, {})[rt] = float(scores.median())
    return out


def plot_pareto(models: list[Model], figures: dict[str, Any], path: Path,
                latency: dict[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    meta = figures["_meta"]
    by_runtime = (latency or {}).get("psnr_by_runtime") or {}
    fig, axes = plt.subplots(1, 3 if by_runtime else 2, figsize=(16.5 if by_runtime else 11, 4.2),
                             dpi=110)
    if by_runtime:
        plot_latency_quality(axes[2], models, latency)
    for ax, key in zip(axes[:2], (meta["fid_name"], meta["lpips_name"]), strict=True):
        for kind, style in (("uniform", "s--"), ("searched", "*")):
            pts = sorted((m.gmacs, figures[m.name][key]) for m in models if m.kind == kind)
            if pts:
                ax.plot(*zip(*pts, strict=True), style, ms=10 if kind == "searched" else 6,
                        label="uniform channel ratio" if kind == "uniform" else "searched")
        for m in models:
            if m.kind in ("teacher", "student"):
                ax.plot(m.gmacs, figures[m.name][key], "o", label=m.name)
        for m in models:
            if m.kind != "uniform":
                ax.annotate(m.name, (m.gmacs, figures[m.name][key]), textcoords="offset points",
                            xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("GMACs (physical, log scale)")
        ax.set_ylabel(f"{key} to the teacher" if "lpips" in key else f"{key} (reference: {meta['reference']})")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_latency_quality(ax, models: list[Model], latency: dict[str, Any]) -> None:
    """Batch-1 latency vs median PSNR to the teacher, each file as its runtime runs it:
    one colour per runtime, hollow markers for int8."""
    by_runtime = latency["psnr_by_runtime"]
    for i, rt in enumerate(r for r in latency["runtimes"] if r != "pytorch"):
        pts = [(latency["models"][m.name][rt]["batch_1"]["median_ms"], by_runtime[m.name][rt], m.name)
               for m in models if m.kind != "teacher" and rt in by_runtime.get(m.name, {})
               and "batch_1" in latency["models"].get(m.name, {}).get(rt, {})]
        if not pts:
            continue
        colour = f"C{i}"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o", ms=7, label=rt, color=colour,
                mfc="none" if rt.endswith("-int8") else colour)
        for x, y, name in pts:
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("latency, batch 1 (ms, log scale)")
    ax.set_ylabel(f"PSNR to the teacher (dB, median of {latency.get('quality_samples')} latents)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def metrics_json(models: list[Model], figures: dict[str, Any], latency: dict[str, Any] | None,
                 ratio: dict[str, Any] | None) -> dict[str, Any]:
    """metrics/evaluate.json: numbers only (strings live in the report)."""
    meta = {k: v for k, v in figures["_meta"].items() if isinstance(v, int | float)}
    out: dict[str, Any] = {
        "teacher": figures["teacher"], "student": figures["full"],
        "models": {m.name: figures[m.name] for m in models}, **meta,
    }
    if latency:
        for m in models:
            out["models"][m.name]["latency"] = latency["models"].get(m.name, {})
            if m.name in latency.get("psnr_by_runtime", {}):
                out["models"][m.name]["psnr_by_runtime"] = latency["psnr_by_runtime"][m.name]
        out["peak_gmacs"] = latency.get("peak_gmacs")
        out["threads"] = latency.get("threads")
    if ratio:
        out["latency_ratio_1024"] = ratio["latency_ratio"]
        out["latency_ratio_1024_p10"] = ratio["latency_ratio_p10"]  # the per-round ratios' spread
        out["latency_ratio_1024_p90"] = ratio["latency_ratio_p90"]
        out["latency_ratio_1024_threads"] = ratio.get("by_threads", {})
        out["latency_ratio_1024_cached"] = int(ratio["measured"]["cached"])
        out["student_efficiency_1024"] = student_efficiency(ratio["bench"])
        out["mac_ratio_1024"] = ratio["mac_ratio"]
        out["mac_ratio_1024_mobilestylegan"] = MOBILESTYLEGAN_MAC_RATIO
    return _numbers(out)


def _numbers(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _numbers(v) for k, v in x.items() if isinstance(v, dict | int | float)
                and not isinstance(v, bool) and (not isinstance(v, float) or math.isfinite(v))}
    return x


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v) if v is not None else "-"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows)]


def since_last_run(comparison: Comparison, now: dict[str, float]) -> list[str]:
    """The report's "Since last run" section: every shared headline figure with its change."""
    if comparison.previous is None:
        return ["## Since last run", "", "No previous finished run of this profile in MLflow.", ""]
    worse = comparison.regressed
    lines = ["## Since last run", "", f"Compared with `{comparison.previous}`: " + (
        f"**regressed** ({len(worse)} figure(s) beyond the tolerances in "
        "`evaluate.regression`)." if worse else "no figure regressed beyond `evaluate.regression`."),
        ""]
    return lines + _table(["figure", "last run", "this run", "since last run", ""],
                          [[k, now[k] - d, now[k], f"{d:+.4g}", "regressed" if k in worse else ""]
                           for k, d in comparison.deltas.items()]) + [""]


def where_the_time_goes(ops: dict[str, Any], n: int = 3) -> list[str]:
    """The report's profile section: each model's slowest operator types per runtime."""
    from ..bench.profile import top

    lines = ["## Where the time goes", "", f"Batch 1, {ops['threads']} threads, each runtime's "
             "own profiler; the whole table (every operator type) is `ops.csv` / `ops.json`.", ""]
    rows = [[model, rt, prof["total_ms"], *(f"{o['op']} {100 * o['share']:.0f}%" for o in top(prof, n))]
            for model, per_rt in ops["profiles"].items() for rt, prof in per_rt.items()]
    lines += _table(["model", "runtime", "ms per run", *(f"#{i + 1}" for i in range(n))],
                    [row + [""] * (3 + n - len(row)) for row in rows])
    if ops["skipped"]:
        lines += ["", "Not profiled: " + "; ".join(f"{k}: {v}" for k, v in ops["skipped"].items())]
    return lines + [""]


def report(models: list[Model], figures: dict[str, Any], latency: dict[str, Any] | None,
           ratio: dict[str, Any] | None, context: dict[str, Any],
           since_last: list[str] | None = None, ops: dict[str, Any] | None = None) -> str:
    """The human-readable report (Markdown): tables, the grid and the Pareto plot."""
    meta = figures["_meta"]
    fid, lp = meta["fid_name"], meta["lpips_name"]
    kid_name = fid.replace("fid", "kid")
    lines = ["# Evaluation: teacher vs students", "",
             f"Teacher: `{context['teacher']}`. Student: `{context['student']}`. "
             f"{meta['samples']} samples per model on the same latents and noise "
             f"(truncation psi {context['truncation_psi']}); FID/KID reference: {meta['reference']} "
             f"({meta['reference_samples'] or 'precomputed'} samples).", ""]
    notes = []
    if meta["stand_in_features"]:
        notes.append("Inception runs on **stand-in (random) weights**: `*_randinit` figures "
                     "rank models but are not comparable with published FIDs.")
    if meta["stand_in_lpips"]:
        notes.append("LPIPS runs on a **stand-in (random) backbone** (`lpips_randinit`).")
    if meta["fid_rank_deficient"]:
        notes.append("Fewer samples than Inception's 2048 features: FID is biased upward; "
                     "compare only at equal sample counts.")
    if context.get("stand_in_teacher"):
        notes.append("The teacher itself is a **random stand-in** (offline profile).")
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    lines += ["## Quality and cost", ""]
    lines += _table(["model", "kind", "output", "params", "GMACs", fid, kid_name, lp, "pixel L1",
                     "PSNR median / p10 (dB)", "SSIM", "MS-SSIM", "exploded"],
                    [[m.name, m.kind, f"{m.resolution}px", m.cost["params"], round(m.gmacs, 4),
                      figures[m.name].get(fid), figures[m.name].get(kid_name),
                      figures[m.name].get(lp), figures[m.name]["pixel_l1"],
                      f"{figures[m.name]['psnr_median']:.2f} / {figures[m.name]['psnr_p10']:.2f}",
                      figures[m.name].get("ssim"), figures[m.name].get("ms_ssim"),
                      figures[m.name]["exploded"]] for m in models])
    lines += ["", "MACs: physical multiply-accumulates of the synthesis network "
              "(pipeline.cost); LPIPS, pixel L1, PSNR and (MS-)SSIM (images clamped to [-1, 1]; "
              "MS-SSIM from 161 px) against "
              "the teacher's image of the same latents at full resolution (lower-resolution "
              "outputs bilinearly up-sampled); exploded: samples whose largest magnitude is "
              "over 1.5x the teacher's on the same latents. Baseline: the teacher's mean "
              f"image over these latents scores PSNR {meta['psnr_mean_image_median']:.2f} / "
              f"{meta['psnr_mean_image_p10']:.2f} dB (median / p10); a student must beat it.", ""]
    if latency:
        lines += ["## Latency", "", f"Machine: {latency.get('machine_text', '-')}; "
                  f"{latency.get('threads')} threads; measured matmul peak "
                  f"{_fmt(latency.get('peak_gmacs'))} GMAC/s.", ""]
        lines += _table(["model", "runtime", "batch", "median ms", "p90 ms", "GMAC/s", "efficiency"],
                        latency["rows"])
        if latency.get("skipped"):
            lines += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in latency["skipped"].items())]
        lines.append("")
    if ratio:
        lines += ["## Teacher / student at 1024x1024 (config-f, random weights: speed only)", ""]
        lines += [f"Teacher and student timed in alternating rounds; the ratio is the median of "
                  f"the per-round ratios, p10-p90 beside it. {describe(ratio['measured'])}.", ""]
        lines += _table(["runtime", "teacher ms", "student ms", "latency ratio", "p10-p90", "rounds"],
                        [[rt, r["teacher_ms"], r["student_ms"], ratio["latency_ratio"][rt],
                          f"{ratio['latency_ratio_p10'][rt]:.2f}-{ratio['latency_ratio_p90'][rt]:.2f}",
                          r["rounds"]]
                         for rt, r in ratio["runtimes"].items() if rt in ratio["latency_ratio"]])
        if len(ratio.get("by_threads", {})) > 1:
            lines += ["", "By thread count: " + "; ".join(
                f"{n} thread(s): " + ", ".join(f"{rt} {r:.2f}x" for rt, r in by_rt.items())
                for n, by_rt in ratio["by_threads"].items())]
        efficiency = student_efficiency(ratio["bench"])
        lines += ["", "Student efficiency (GMAC/s over the measured matmul peak): " + ", ".join(
            f"{rt} {100 * e:.1f}%" for rt, e in efficiency.items()) + "."]
        lines += ["", f"MAC ratio (pipeline.cost, physical): {ratio['mac_ratio']:.2f}x; "
                  f"MobileStyleGAN's paper: {MOBILESTYLEGAN_MAC_RATIO}x.", ""]
    lines += where_the_time_goes(ops) if ops else []
    lines += since_last or []
    names = [m.name for m in models if m.kind != "uniform"]
    lines += ["## Samples", "", f"Columns: {' | '.join(names)} (same latents and noise; "
              "lower-resolution outputs up-sampled).", "", "![samples](grid.png)", "",
              "## Cost vs quality", "", "![pareto](pareto.png)", ""]
    return "\n".join(lines)


def run(params: Params, paths: Paths, ctx: Context) -> StageResult:
    """Every model side by side; the report, grid, Pareto plot and plot CSVs."""
    cfg = params.evaluate
    teacher = load_teacher(paths.teacher).generator
    student, header = load_student(paths.student)
    if student.cfg.resolution != teacher.cfg.resolution:
        raise PipelineError(f"evaluate: student ({student.cfg.resolution}) and teacher "
                            f"({teacher.cfg.resolution}) resolutions differ")
    configs = None
    if paths.search and Path(paths.search).is_file():
        configs = json.loads(Path(paths.search).read_text())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lpips = lpips_network(params.metric_networks, cfg.lpips, ctx.cache_dir, device)
    features = inception_network(params.metric_networks, ctx.cache_dir, device)
    models, figures, samples = evaluate_models(cfg, teacher, student, configs,
                                               sha256_file(paths.teacher), lpips, features,
                                               ctx.cache_dir, device, ctx.progress)
    latency = ratio = None
    if cfg.latency.enabled:
        from ..bench import evaluate_latency
        from ..export.quantize import latent_inputs

        # int8 runtimes calibrate on the styles this stage measures quality on
        calibration = latent_inputs(teacher, 16, cfg.seed, cfg.truncation_psi)["wplus"]
        from ..bench.measurements import default_dir
        # teacher and full student also profiled per operator, in the files just timed
        profiled = [m.name for m in models if m.kind in ("teacher", "student")] if cfg.latency.profile else []
        latency, ratio = evaluate_latency(cfg.latency, models, teacher, ctx.cache_dir / "bench",
                                          calibration=calibration,
                                          measurements=default_dir() if cfg.latency.ratio_cache else None,
                                          profile_models=profiled)
        if cfg.latency.quality_samples:
            latency["psnr_by_runtime"] = runtime_psnr(latency["files"], teacher, cfg)
            latency["quality_samples"] = cfg.latency.quality_samples
    ops = None
    if cfg.latency.enabled and cfg.latency.profile:
        ops = {"threads": latency["threads"], "runs": cfg.latency.profile_runs,
               "runtimes": latency["runtimes"], "profiles": latency["profiles"],
               "skipped": latency["profile_skipped"]}
    metrics = metrics_json(models, figures, latency, ratio)
    comparison = compare_with_last_run(NAME, metrics, params, ctx)
    meta_path = Path(paths.teacher).parent / "metadata.json"  # written by fetch_teacher
    stand_in_teacher = bool(meta_path.is_file()
                            and json.loads(meta_path.read_text()).get("random_weights"))
    context = {"teacher": str(paths.teacher), "student": str(paths.student),
               "truncation_psi": cfg.truncation_psi, "stand_in_teacher": stand_in_teacher}
    out_dir, plots_dir = Path(paths.out), Path(paths.plots)
    with atomic_dir(out_dir) as tmp:
        save_grid(grid_image(models, samples), tmp / "grid.png",
                  nrow=sum(m.kind != "uniform" for m in models))
        plot_pareto(models, figures, tmp / "pareto.png", latency)
        (tmp / "report.md").write_text(report(models, figures, latency, ratio, context,
                                              since_last_run(comparison, headline(NAME, metrics)),
                                              ops))
        if ops is not None:
            from ..bench.profile import write_csv

            write_csv(ops, tmp / "ops.csv")
            write_json(tmp / "ops.json", ops)
        write_json(tmp / "evaluate.json", metrics)
    write_quality_csv(models, figures, plots_dir / "quality.csv")
    # dvc.yaml declares latency.csv whatever the params: with latency off, the header alone
    columns = ["model", "runtime", "batch", "median_ms", "p90_ms", "gmacs_per_s", "efficiency"]
    rows = latency["rows"] if latency else []
    _write_csv([dict(zip(columns, row, strict=True)) for row in rows], plots_dir / "latency.csv",
               columns)
    tags = {"fid_reference": figures["_meta"]["reference"], "student_ema": header.get("ema", "unknown"),
            "lpips_network": lpips.name, "feature_network": features.name}
    if ratio:
        tags["latency_ratio_1024_measured"] = describe(ratio["measured"])
    return StageResult(metrics, {out_dir: NAME, plots_dir: NAME}, tags,
                       ["teacher"] * stand_in_teacher + stand_ins(lpips, features),
                       summary=[out_dir / "report.md", out_dir / "grid.png", out_dir / "pareto.png"],
                       comparison=comparison)
