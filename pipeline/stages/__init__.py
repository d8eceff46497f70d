"""The five DVC stages, one module each, named as in ``dvc.yaml``:

    fetch_teacher -> distill -> search -> evaluate -> export

Every stage module has the same shape:

    NAME                the DVC stage name, also its section of params.yaml
    SHARED              the other params sections it reads (``metric_networks``,
                        ``evaluate.regression``)
    Paths               a dataclass of its input and output paths, with the defaults
                        ``dvc.yaml`` uses (the CLI's ``--<field>`` options)
    run(params, paths, ctx) -> StageResult

:func:`execute` runs one inside its MLflow run, with its temporary files in its own
folder (pipeline/scratch.py), and does what every stage does after its work: add its
cost (``seconds``, ``peak_rss_gb``, ``peak_gpu_gb`` on a GPU: pipeline/usage.py), write
``metrics/<stage>.json``, log the metrics, tags and artifacts, and set the one
``stand_in_weights`` tag; the pipeline's parent run gets the stage's headline figures
(pipeline/headline.py), the effective params, its summary files and, from the stages
that judge the run (evaluate, export), the verdict on the previous run.
``components/<stage>.py`` is just its CLI.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .. import scratch, tracking, usage
from ..errors import PipelineError
from ..headline import Comparison, compare, headline
from ..io import write_json
from ..params import Params

STAGES = ("fetch_teacher", "distill", "search", "evaluate", "export")
log = logging.getLogger(__name__)


@dataclass
class Context:
    """What a stage gets besides params and paths."""

    cache_dir: Path
    progress: bool = True
    tracker: tracking.StageRun | None = None  # curves logged while the stage runs


@dataclass
class StageResult:
    """What a stage produced: ``metrics/<stage>.json``'s content (numbers, nested), MLflow
    tags, the files to log (path -> artifact folder), and the networks that ran on
    stand-in weights (``teacher``, ``lpips_alex``, ``inception``, ...)."""

    metrics: dict[str, Any]
    artifacts: dict[str | Path, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    stand_ins: list[str] = field(default_factory=list)
    summary: list[Path] = field(default_factory=list)  # also shown on the pipeline run (report, grids)
    comparison: Comparison | None = None  # its verdict on the previous run, for the pipeline run


def load(name: str) -> ModuleType:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return importlib.import_module(f"{__name__}.{name}")


def execute(stage: ModuleType, params: Params, paths: Any, metrics_path: str | Path,
            cache_dir: str | Path, progress: bool = True) -> StageResult:
    """Run ``stage`` in its MLflow run and record its result. Under torchrun only rank 0
    talks to MLflow and writes the metrics; the other ranks just run."""
    check_writable(paths, metrics_path)
    with scratch.stage_scratch(stage.NAME):  # every temporary file of the run, swept after a kill
        return _execute(stage, params, paths, metrics_path, cache_dir, progress)


def _execute(stage: ModuleType, params: Params, paths: Any, metrics_path: str | Path,
             cache_dir: str | Path, progress: bool) -> StageResult:
    if os.environ.get("RANK", "0") != "0":
        return stage.run(params, paths, Context(Path(cache_dir), progress))
    with tracking.stage_run(stage.NAME, getattr(params, stage.NAME),
                            tags={"profile": params.profile}) as tracker:
        for section in stage.SHARED:  # "metric_networks", "evaluate.regression"
            tracker.log_params(functools.reduce(getattr, section.split("."), params),
                               prefix=f"{section}.")
        cost: dict[str, float] = {}
        try:
            with usage.measured() as cost:
                result = stage.run(params, paths, Context(Path(cache_dir), progress, tracker))
        except BaseException:
            tracker.log_metrics(cost)  # a failed run shows what it cost too
            raise
        result.metrics.update(cost)
        write_json(metrics_path, result.metrics)
        tracker.log_metrics(result.metrics)
        tracker.set_tags({**result.tags, "stand_in_weights": str(bool(result.stand_ins)).lower()})
        for path, folder in {**result.artifacts, metrics_path: stage.NAME}.items():
            tracker.log_artifact(path, folder)
        pipeline_tags = {"profile": params.profile,
                         **({"stand_in_weights": "true"} if result.stand_ins else {})}
        tracker.update_pipeline_run(headline(stage.NAME, result.metrics), params, pipeline_tags,
                                    [f for f in result.summary if Path(f).is_file()],
                                    result.comparison)
    return result


def compare_with_last_run(stage: str, metrics: dict[str, Any], params: Params,
                          ctx: Context) -> Comparison:
    """``stage``'s headline figures against the previous finished pipeline run of the same
    profile (tolerances: ``evaluate.regression``); adds ``since_last`` (deltas) and
    ``regressed`` (1/0) to ``metrics``."""
    previous = ctx.tracker.previous_pipeline_run(params.profile) if ctx.tracker else None
    name, figures = previous or (None, None)
    comparison = compare(headline(stage, metrics), figures, name, params.evaluate.regression)
    metrics["since_last"] = comparison.deltas
    metrics["regressed"] = int(bool(comparison.regressed))
    if comparison.regressed:
        log.warning("%s: regressed since %s: %s", stage, name, comparison.summary())
    return comparison


def stand_ins(*networks: Any) -> list[str]:
    """The names of the metric networks that run on stand-in weights."""
    return [n.name for n in networks if n.stand_in]


def option(default: str | None, help: str, output: bool = False) -> Any:
    """A ``Paths`` field: its default and the CLI help of ``--<name>``; ``output``: the stage
    writes there (checked writable before any work)."""
    return field(default=default, metadata={"help": help, "output": output})


def check_writable(paths: Any, *more: str | Path) -> None:
    """Every output location of ``paths`` (and ``more``) can be written, found before hours
    of work rather than after: a probe file is created where the stage will write, in the
    folder itself and beside it (outputs are swapped in from their parent)."""
    outputs = [getattr(paths, f.name) for f in dataclasses.fields(paths) if f.metadata.get("output")]
    for target in [Path(p) for p in (*outputs, *more) if p]:
        places = [target.parent] + ([target] if target.is_dir() else [])
        for place in places:
            existing = next(p for p in (place, *place.parents) if p.exists())
            try:
                if not existing.is_dir():
                    raise NotADirectoryError(f"{existing} is a file")
                with tempfile.TemporaryFile(dir=existing):
                    pass
            except OSError as e:
                why = e.strerror or str(e)
                raise PipelineError(f"{target}: cannot write this output ({existing}: {why}); "
                                    f"nothing was run") from None
