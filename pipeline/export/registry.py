"""Exported models in the MLflow Model Registry, and the decision which one to ship.

Each model's primary ONNX file (the full student's and every budget's, one registered
model each: ``<name>`` and ``<name>-<budget>``) is logged to the export run with a
signature (input and output tensor specs, batch dimension variable) and registered;
the model card (Markdown) becomes the version's description, its figures the version's
tags. Aliases carry the decision: every new version is ``candidate``; ``champion``
moves to it unless it is worse than the current champion beyond the gate (params'
``export.registry``), and the version says why (tag ``promotion``). A consumer loads
``models:/<name>@champion``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from ..params import Export
from .card import CARD_JSON, CARD_MD
from .formats import run_onnx

log = logging.getLogger(__name__)
MAX_DESCRIPTION = 60000  # stay well inside what registry backends store
# a version's figures (its tags); the champion's are read back to judge a new version
FIGURES = ("resolution", "params", "macs", "psnr", "exploded", "ms_onnxruntime", "onnx_max_abs_err")


def model_name(cfg: Export, model: str) -> str:
    """The registered model of ``model`` (``full`` or a budget)."""
    return cfg.registry.name if model == "full" else f"{cfg.registry.name}-{model}"


def version_figures(card: dict[str, Any], primary: str) -> dict[str, float]:
    """What a version is judged and found by: cost, the evaluate stage's quality and
    ONNX Runtime latency (when it ran), the ONNX file's parity error."""
    evaluate = card.get("evaluate") or {}
    latency = evaluate.get("latency", {}).get("onnxruntime", {}).get("batch_1", {})
    parity = [a.get("max_abs_err") for a in card["artifacts"] if a["format"] == "onnx"
              and a["input"] == primary and a["precision"] == "fp32"]
    figures = {"resolution": card["resolution"], "params": card["cost"]["params"],
               "macs": card["cost"]["macs"], "psnr": evaluate.get("psnr_median"),
               "exploded": evaluate.get("exploded"), "ms_onnxruntime": latency.get("median_ms"),
               "onnx_max_abs_err": parity[0] if parity else None}
    return {k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}


def promotion(new: dict[str, float], champion: dict[str, float] | None, cfg: Export) -> str | None:
    """None when ``new`` may become champion, else why not (one line)."""
    if champion is None:
        return None
    gate = cfg.registry
    worse = []
    if "psnr" in new and "psnr" in champion and new["psnr"] < champion["psnr"] - gate.champion_psnr_db:
        worse.append(f"PSNR {new['psnr']:.2f} dB < champion's {champion['psnr']:.2f} - "
                     f"{gate.champion_psnr_db}")
    if "exploded" in new and new["exploded"] > champion.get("exploded", 0):
        worse.append(f"{new['exploded']:.0f} exploded samples > champion's "
                     f"{champion.get('exploded', 0):.0f}")
    fast, slow = champion.get("ms_onnxruntime"), new.get("ms_onnxruntime")
    if fast and slow and slow > fast * (1 + gate.champion_latency_relative):
        worse.append(f"onnxruntime {slow:.3g} ms > champion's {fast:.3g} ms + "
                     f"{gate.champion_latency_relative:.0%}")
    return "; ".join(worse) or None


def register_onnx(folder: Path, cfg: Export, run_id: str | None, model: str = "full") -> str | None:
    """Register ``folder``'s primary fp32 ONNX file (the first input variant) under
    :func:`model_name`, logged to the stage's run ``run_id``, tag it with its figures and
    decide its aliases; returns the new version, or None when there is no ONNX file or
    no run (tracking off)."""
    import mlflow
    import onnx
    import onnxruntime
    from mlflow.models import infer_signature

    kind = cfg.inputs[0]
    path = folder / f"{kind}.onnx"
    if run_id is None:
        log.warning("tracking is off: %s is not registered", path)
        return None
    if not path.is_file():
        log.warning("%s: no ONNX file (format skipped), nothing registered", path)
        return None
    card = json.loads((folder / CARD_JSON).read_text())
    shape = next(i["shape"] for i in card["inputs"] if i["name"] == kind)
    x = torch.randn([1, *shape[1:]], generator=torch.Generator().manual_seed(0))
    signature = infer_signature({kind: x.numpy()}, {"image": run_onnx(path, x).numpy()})
    client = mlflow.MlflowClient()
    # log_model logs to the active run (the stage ends it); start_run refuses a run of
    # another experiment than the one the process last set
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)
    name = model_name(cfg, model)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(path)), name=f"{card['name']}-onnx", signature=signature,
            registered_model_name=name, save_as_external_data=False,
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        )
    version = str(info.registered_model_version)
    client.update_model_version(name, version,
                                description=(folder / CARD_MD).read_text()[:MAX_DESCRIPTION])
    figures = version_figures(card, kind)
    for key, value in {"input": kind, "budget": model, "run_id": run_id, **figures}.items():
        client.set_model_version_tag(name, version, key, f"{value:.6g}" if isinstance(value, float)
                                     else str(value))
    client.set_registered_model_alias(name, "candidate", version)
    champion = _champion_figures(client, name)
    why_not = promotion(figures, champion, cfg)
    if why_not is None:
        client.set_registered_model_alias(name, "champion", version)
        decision = "champion" if champion is None else "champion (not worse than the last one)"
    else:
        decision = f"candidate only: {why_not}"
    client.set_model_version_tag(name, version, "promotion", decision)
    log.info("registered %s version %s (%s): %s", name, version, path.name, decision)
    return version


def _champion_figures(client, name: str) -> dict[str, float] | None:
    """The champion version's figures (its tags), or None when there is no champion."""
    from mlflow.exceptions import MlflowException

    try:
        tags = client.get_model_version_by_alias(name, "champion").tags
    except MlflowException:  # no such alias yet
        return None
    out = {}
    for key in FIGURES:
        try:
            out[key] = float(tags[key])
        except (KeyError, ValueError):  # not measured for that version, or edited by hand
            continue
    return out
