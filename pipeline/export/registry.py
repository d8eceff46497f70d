"""The full student's ONNX model in the MLflow Model Registry: logged to the active run
with a signature (input and output tensor specs, batch dimension variable) and
registered; the model card (Markdown) becomes the version's description."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ..params import Export
from .card import CARD_JSON, CARD_MD
from .formats import run_onnx

log = logging.getLogger(__name__)
MAX_DESCRIPTION = 60000  # stay well inside what registry backends store


def register_onnx(folder: Path, cfg: Export, run_id: str | None) -> str | None:
    """Register ``folder``'s primary fp32 ONNX file (the first input variant) under
    ``cfg.registry.name``, logged to the stage's run ``run_id``; returns the new version, or
    None when there is no ONNX file or no run (tracking off)."""
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
    with mlflow.start_run(run_id=run_id):
        info = mlflow.onnx.log_model(
            onnx.load(str(path)), name=f"{card['name']}-onnx", signature=signature,
            registered_model_name=cfg.registry.name, save_as_external_data=False,
            pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
        )
    version = str(info.registered_model_version)
    client.update_model_version(cfg.registry.name, version,
                                description=(folder / CARD_MD).read_text()[:MAX_DESCRIPTION])
    for key, value in (("input", kind), ("resolution", card["resolution"]),
                       ("params", card["cost"]["params"]), ("macs", card["cost"]["macs"])):
        client.set_model_version_tag(cfg.registry.name, version, key, str(value))
    log.info("registered %s version %s (%s)", cfg.registry.name, version, path.name)
    return version
