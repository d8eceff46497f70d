"""The headline figures of a pipeline run, put on its parent MLflow run so that the runs
table compares nightly runs without opening ten stage runs.

Each stage contributes a few figures from its own ``metrics/<stage>.json`` under short,
stable names (the README's "Headline figures" lists them). Names of figures measured on
stand-in networks keep their ``_randinit`` part, as everywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RUNTIMES = ("pytorch", "onnxruntime", "executorch")


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _lpips_key(figures: Mapping[str, Any], suffix: str = "") -> str | None:
    """The LPIPS figure's name among ``figures`` (``lpips_alex``, ``lpips_vgg_randinit``, ...)."""
    return next((k for k in figures if k.startswith("lpips_") and "_teacher" not in k
                 and k.endswith(suffix)), None)


def headline(stage: str, metrics: Mapping[str, Any]) -> dict[str, float]:
    """The headline figures ``stage`` contributes, from its metrics."""
    out: dict[str, Any] = {}
    if stage == "fetch_teacher":
        out = {"teacher_params": metrics.get("params"), "teacher_resolution": metrics.get("resolution")}
    elif stage == "distill":
        out = {"distill_steps": metrics.get("steps"),
               "distill_psnr_start": metrics.get("psnr_to_teacher_start"),
               "distill_psnr_end": metrics.get("psnr_to_teacher_end"),
               "distill_psnr_p10_end": metrics.get("psnr_to_teacher_p10_end"),
               "distill_exploded_end": metrics.get("exploded_end")}
        for when in ("start", "end"):
            if key := next((k for k in metrics if k.startswith("lpips_") and k.endswith(f"_to_teacher_{when}")), None):
                out[f"distill_{key.removesuffix(f'_to_teacher_{when}')}_{when}"] = metrics[key]
    elif stage == "search":
        for name, figures in metrics.get("budgets", {}).items():
            out[f"{name}_macs"] = figures.get("macs")
            if key := _lpips_key(figures):
                out[f"{name}_{key}_to_full"] = figures[key]
    elif stage == "evaluate":
        for runtime, ratio in metrics.get("latency_ratio_1024", {}).items():
            out[f"latency_ratio_1024_{runtime}"] = ratio
        for name, figures in metrics.get("models", {}).items():
            if name.endswith("_uniform"):
                continue  # baselines stay in the stage run
            if name != "teacher":  # the teacher's distances to itself say nothing
                out[f"{name}_psnr"] = figures.get("psnr_median")
                out[f"{name}_exploded"] = figures.get("exploded")
            for key in ("fid", "fid_randinit", "kid", "kid_randinit"):
                out[f"{name}_{key}"] = figures.get(key)
            for runtime in RUNTIMES:
                batch_1 = figures.get("latency", {}).get(runtime, {}).get("batch_1", {})
                out[f"{name}_ms_{runtime}"] = batch_1.get("median_ms")
    elif stage == "export":
        errors = [_number(f.get(k)) for f in metrics.get("models", {}).values()
                  for k in ("onnx_max_abs_err", "pte_max_abs_err")]
        out = {"parity_max_abs_err": max((e for e in errors if e is not None), default=None)}
    return {k: v for k, value in out.items() if (v := _number(value)) is not None}


def describe(metrics: Mapping[str, float], tags: Mapping[str, str]) -> str:
    """The pipeline run's description (MLflow's note, Markdown): the teacher, distillation,
    and a table of the models with what the run has measured so far."""
    lines = [f"**Pipeline run** `{tags.get('run_group', '?')}`, profile `{tags.get('profile', '?')}`"
             f"{', stand-in weights' if tags.get('stand_in_weights') == 'true' else ''}."]
    if "teacher_params" in metrics:
        lines.append(f"Teacher: {metrics['teacher_params'] / 1e6:.2f}M parameters at "
                     f"{metrics.get('teacher_resolution', 0):.0f} px.")
    if "distill_steps" in metrics:
        lines.append(f"Distilled {metrics['distill_steps']:.0f} steps: PSNR to the teacher "
                     f"{metrics.get('distill_psnr_start', float('nan')):.2f} -> "
                     f"{metrics.get('distill_psnr_end', float('nan')):.2f} dB (median), "
                     f"{metrics.get('distill_exploded_end', 0):.0f} exploded samples.")
    models = sorted({k.removesuffix("_psnr") for k in metrics if k.endswith("_psnr")
                     and not k.startswith("distill_")} | {k.removesuffix("_macs") for k in metrics
                                                          if k.endswith("_macs")})
    if models:
        columns = ["MACs", "PSNR (dB)", *(f"{r} ms" for r in RUNTIMES)]
        keys = ["macs", "psnr", *(f"ms_{r}" for r in RUNTIMES)]
        lines += ["", "| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for model in models:
            cells = [_cell(metrics.get(f"{model}_{key}")) for key in keys]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    if "parity_max_abs_err" in metrics:
        lines.append(f"\nExport parity: max abs error {metrics['parity_max_abs_err']:.2e}.")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"
