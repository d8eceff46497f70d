"""dvc.yaml lists every file a stage runs (its import closure) and every params section it
reads, so editing any of them re-runs the stage; and the closure itself is computed right."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline import stages
from pipeline.code import ROOT, covering, import_closure, stage_code

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def uncovered(stage: str, deps: list[str]) -> list[str]:
    """Files of the stage's code that no dep (a file or a folder above it) covers."""
    listed = [ROOT / d for d in deps]
    return sorted(p.relative_to(ROOT).as_posix() for p in stage_code(stage)
                  if not any(p == d or p.is_relative_to(d) for d in listed))


def test_the_stages_are_the_dvc_stages():
    assert tuple(DVC) == stages.STAGES


@pytest.mark.parametrize("stage", stages.STAGES)
def test_every_imported_file_is_a_dep(stage):
    deps = DVC[stage]["deps"]
    missing = uncovered(stage, deps)
    assert not missing, (f"dvc.yaml stage {stage} misses {missing}; its code deps should be: "
                         f"{covering(stage_code(stage))}")
    for dep in deps:
        assert (ROOT / dep).exists() or dep.startswith(("artifacts/", "metrics/")), dep


@pytest.mark.parametrize("stage", stages.STAGES)
def test_every_params_section_read_is_a_param(stage):
    module = stages.load(stage)
    assert module.NAME == stage
    assert set(DVC[stage]["params"]) == {stage, *module.SHARED}


def test_a_missing_dep_is_caught():
    deps = [d for d in DVC["distill"]["deps"] if d != "pipeline/models"]
    assert "pipeline/models/elastic.py" in uncovered("distill", deps)


def test_the_closure_follows_relative_lazy_and_package_imports():
    files = {p.relative_to(ROOT).as_posix() for p in stage_code("evaluate")}
    assert "pipeline/bench/__init__.py" in files  # imported inside run(): lazily
    assert "pipeline/stages/__init__.py" in files and "pipeline/__init__.py" in files
    assert "pipeline/stages/export.py" not in files  # another stage's code
    assert import_closure("json", "torch") == []  # not ours: not deps
    assert all(isinstance(p, Path) and p.is_file() for p in import_closure("components.export"))
