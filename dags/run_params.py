"""Apply a DAG run's profile and overrides to params.yaml, and put the file back afterwards.

    python dags/run_params.py apply     # before the stages (the DAG's setup task)
    python dags/run_params.py restore   # after them, also when a stage failed (teardown)

``apply`` reads ``STYLEGAN_MOBILE_PROFILE`` (a name in ``profiles/`` or a path; empty:
none) and ``STYLEGAN_MOBILE_OVERRIDES`` (a JSON list of ``key=value``, the grammar of
``dvc exp run -S``, applied after the profile). It keeps the committed params.yaml in
``.dvc/tmp/`` and writes the effective one in its place, validated by the project's
schema; the stages then run unchanged (``dvc repro --single-item <stage>``) and dvc.lock
records what they used. ``restore`` puts the kept file back, so the next scheduled run
starts from the committed parameters. ``apply`` first restores what an interrupted run
left behind. Exit status: 0, or 2 with one line naming a bad profile or override.

Run from the repository root, in the project environment (locally or in a pod).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

PARAMS = Path("params.yaml")
KEPT = Path(".dvc/tmp/params.yaml.airflow-base")


def restore() -> bool:
    """Put the kept params.yaml back; False when there was nothing to restore."""
    if not KEPT.exists():
        return False
    os.replace(KEPT, PARAMS)
    return True


def apply(profile: str, overrides: list[str]) -> list[str]:
    """Write params.yaml = committed + profile + overrides; returns the applied overrides."""
    if restore():
        print("restored params.yaml left behind by an interrupted run")
    if not profile and not overrides:
        return []
    sys.path.insert(0, str(Path.cwd()))
    from pipeline.params import load_params, profile_overrides

    items = []
    if profile:
        # ++: set the key whether or not the committed file has it (a profile may add budgets)
        items = [f"++{key}={_yaml_scalar(value)}" for key, value in profile_overrides(profile, PARAMS).items()]
    items += overrides
    KEPT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PARAMS, KEPT)
    try:
        from dvc.utils.hydra import apply_overrides

        apply_overrides(PARAMS, items)
        load_params(PARAMS)
    except BaseException:
        restore()
        raise
    return items


def _yaml_scalar(value) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def main(argv: list[str]) -> int:
    if argv not in (["apply"], ["restore"]):
        print("usage: python dags/run_params.py apply|restore", file=sys.stderr)
        return 2
    if argv == ["restore"]:
        print("params.yaml restored" if restore() else "params.yaml unchanged (nothing to restore)")
        return 0
    profile = os.environ.get("STYLEGAN_MOBILE_PROFILE", "").strip()
    try:
        overrides = json.loads(os.environ.get("STYLEGAN_MOBILE_OVERRIDES") or "[]")
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            raise ValueError("must be a JSON list of strings")
    except ValueError as e:
        print(f"error: STYLEGAN_MOBILE_OVERRIDES: {e}", file=sys.stderr)
        return 2
    try:
        applied = apply(profile, overrides)
    except Exception as e:  # ParamsError, DVC's InvalidArgumentError: bad input
        message = f"{e} ({e.__cause__})" if e.__cause__ else str(e)
        print(f"error: {' '.join(message.split())}"[:2000], file=sys.stderr)
        return 2
    print("params.yaml as committed" if not applied else
          f"params.yaml with profile={profile or '-'}: " + " ".join(applied))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
