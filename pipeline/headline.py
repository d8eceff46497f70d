"""The headline figures of a pipeline run, put on its parent MLflow run so that the runs
table compares nightly runs without opening ten stage runs.

Each stage contributes a few figures from its own ``metrics/<stage>.json`` under short,
stable names (the README's "Headline figures" lists them). Names of figures measured on
stand-in networks keep their ``_randinit`` part, as everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RUNTIMES = ("pytorch", "onnxruntime", "executorch")
REDUCED_PRECISION = ("onnxruntime-int8", "executorch-int8", "executorch-fp16")


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
               "distill_ssim_end": metrics.get("ssim_to_teacher_end"),
               "distill_exploded_end": metrics.get("exploded_end")}
        for when in ("start", "end"):
            if key := next((k for k in metrics if k.startswith("lpips_") and k.endswith(f"_to_teacher_{when}")), None):
                out[f"distill_{key.removesuffix(f'_to_teacher_{when}')}_{when}"] = metrics[key]
    elif stage == "search":
        for name, figures in metrics.get("budgets", {}).items():
            out[f"{name}_macs"] = figures.get("macs")
            if key := _lpips_key(figures):
                out[f"{name}_{key}_to_full"] = figures[key]
            if "budget_ms" in figures:  # a latency budget: its ms, as predicted and measured
                out.update({f"{name}_{k}": figures.get(k) for k in (
                    "budget_ms", "latency_ms_predicted", "latency_ms_measured", "within_budget")})
        for model, check in metrics.get("latency_model", {}).items():
            out.update({f"latency_model_{model}_{k}": check.get(k)
                        for k in ("median_abs_err", "max_abs_err")})
    elif stage == "evaluate":
        for runtime, ratio in metrics.get("latency_ratio_1024", {}).items():
            out[f"latency_ratio_1024_{runtime}"] = ratio
        for name, figures in metrics.get("models", {}).items():
            if name.endswith("_uniform"):
                continue  # baselines stay in the stage run
            if name != "teacher":  # the teacher's distances to itself say nothing
                out[f"{name}_psnr"] = figures.get("psnr_median")
                out[f"{name}_ssim"] = figures.get("ssim")
                out[f"{name}_exploded"] = figures.get("exploded")
            for key in ("fid", "fid_randinit", "kid", "kid_randinit"):
                out[f"{name}_{key}"] = figures.get(key)
            for runtime in (*RUNTIMES, *REDUCED_PRECISION):
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
    if tags.get("compared_with"):
        verdict = (f"**Regressed**: {tags['regressed_figures']}" if tags.get("regressed") == "true"
                   else "no key figure regressed")
        lines.append(f"\nSince the last run (`{tags['compared_with']}`): {verdict}.")
    return "\n".join(lines)


def _cell(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


@dataclass
class Comparison:
    """This run's headline figures against the previous pipeline run's."""

    previous: str | None = None  # that run's name; None: nothing to compare with
    deltas: dict[str, float] = field(default_factory=dict)  # now - before, shared figures
    judged: list[str] = field(default_factory=list)  # the shared figures a tolerance applies to
    regressed: dict[str, str] = field(default_factory=dict)  # figure -> "20 -> 19.4 (tolerance 0.5 dB)"

    def summary(self) -> str:
        return "; ".join(f"{figure} {why}" for figure, why in self.regressed.items())


def _tolerance(key: str, old: float, tolerance) -> tuple[float, str] | None:
    """How much worse ``key`` may get (in its own units, worse = positive) and how the
    tolerance reads; None for figures that are reported, not judged (latencies in ms...)."""
    if key.endswith("_psnr"):
        return tolerance.psnr_db, f"{tolerance.psnr_db} dB"
    if key.endswith("_exploded"):
        return tolerance.exploded, f"{tolerance.exploded}"
    if any(key.endswith(f"_{m}") for m in ("fid", "fid_randinit", "kid", "kid_randinit")):
        return tolerance.fid_relative * abs(old), f"{tolerance.fid_relative:.0%}"
    if key.startswith("latency_ratio_1024_"):
        return tolerance.latency_ratio_relative * abs(old), f"{tolerance.latency_ratio_relative:.0%}"
    if key == "parity_max_abs_err":
        return tolerance.parity_abs, f"{tolerance.parity_abs:g}"
    return None


def compare(now: Mapping[str, float], before: Mapping[str, float] | None, previous: str | None,
            tolerance) -> Comparison:
    """Deltas of the figures both runs have, and those that got worse beyond ``tolerance``
    (params' ``evaluate.regression``): PSNR down, FID/KID, exploded samples or the export
    parity error up, the 1024 latency ratio down. Models only one run has are not compared."""
    if before is None:
        return Comparison()
    deltas = {k: now[k] - before[k] for k in sorted(now) if k in before and k != "regressed"}
    judged, worse = [], {}
    for key, delta in deltas.items():
        if (limit := _tolerance(key, before[key], tolerance)) is None:
            continue
        judged.append(key)
        higher_is_better = key.endswith("_psnr") or key.startswith("latency_ratio_1024_")
        if (-delta if higher_is_better else delta) > limit[0]:
            worse[key] = f"{before[key]:.4g} -> {now[key]:.4g} (tolerance {limit[1]})"
    return Comparison(previous, deltas, judged, worse)


# The runs table's default view: MLflow's UI loads a view state shared under an experiment
# tag when its URL names the key (viewStateShareKey); the README's link opens it.
VIEW_KEY = "headline"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
_VIEW_FIRST = ("distill_psnr_end", "distill_exploded_end", "full_psnr", "full_ssim", "full_exploded",
               "full_fid", "full_fid_randinit", "full_kid", "full_kid_randinit",
               *(f"latency_ratio_1024_{r}" for r in RUNTIMES), "parity_max_abs_err", "regressed")


def view_figures(metrics: Mapping[str, float]) -> list[str]:
    """The headline figures shown as the runs table's columns: the full student's and the
    run's verdict first, then each budget's MACs, PSNR and ExecuTorch latency (a latency
    budget's: measured in its runtime, and whether within)."""
    budgets = sorted(k.removesuffix("_macs") for k in metrics if k.endswith("_macs"))
    per_budget = [f"{b}_{f}" for b in budgets
                  for f in ("macs", "psnr", "ms_executorch", "latency_ms_measured", "within_budget")]
    return [k for k in (*_VIEW_FIRST, *per_budget) if k in metrics]


def view_state(figures: list[str]) -> str:
    """The shared view (JSON, MLflow's runs-page state): pipeline runs only, newest first,
    the profile and ``figures`` as columns."""
    columns = ["params.`profile`", *(f"metrics.`{f}`" for f in figures)]
    return json.dumps({"searchFilter": "tags.role = 'pipeline'", "orderByKey": "attributes.start_time",
                       "orderByAsc": False, "startTime": "ALL", "lifecycleFilter": "Active",
                       "datasetsFilter": [], "modelVersionFilter": "All Runs",
                       "selectedColumns": columns})
