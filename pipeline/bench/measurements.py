"""Measurements that depend only on the code, the runtimes' versions and the machine (the
1024x1024 teacher/student table, the search's per-layer latency models), kept between
runs and between clones of the repository, and measured again when any of those changes.

An entry's key is exactly those three plus the settings of the measurement:

* ``code``: a digest of the source files that decide what is timed and how: the networks
  (``pipeline/models``), their export graphs and exporters (``pipeline/export``), the
  runtimes and timing (``pipeline/bench``) and the MAC counter (``pipeline/cost.py``),
  as far as the measuring module imports them (:func:`code_digest`);
* ``versions``: Python, torch, onnxruntime, executorch;
* ``machine``: CPU model, physical / logical / usable cores, platform.

Entries live in one folder per machine user, ``$STYLEGAN_MOBILE_MEASUREMENTS`` or
``${XDG_CACHE_HOME:-~/.cache}/stylegan-mobile/measurements``, as JSON (``<kind>-<digest>.json``:
the key, when and where it was measured, and the result), written atomically. An entry
that does not parse or was made for another key is measured again, never trusted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..code import ROOT, import_closure
from ..io import write_json
from .machine import machine_info

log = logging.getLogger(__name__)

CACHE_ENV = "STYLEGAN_MOBILE_MEASUREMENTS"
# what decides what is timed and how (the rest of an import closure, params or I/O, does not)
MEASURED_CODE = ("pipeline/models/", "pipeline/export/", "pipeline/bench/", "pipeline/cost.py")
VERSIONS = ("python", "torch", "onnxruntime", "executorch")
MACHINE = ("cpu", "physical_cores", "logical_cores", "usable_cores", "platform")


def default_dir() -> Path:
    """``$STYLEGAN_MOBILE_MEASUREMENTS``, else the user's cache folder (shared by every
    clone on this machine: the measurements are the machine's, not the checkout's)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stylegan-mobile" / "measurements"


def code_digest(*modules: str) -> str:
    """sha256 of the measured code that ``modules`` import (MEASURED_CODE files of their
    import closure): path and content of each."""
    digest = hashlib.sha256()
    for path in import_closure(*modules):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(MEASURED_CODE):
            digest.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def environment() -> dict[str, dict[str, Any]]:
    """This machine and the runtimes' versions, as a key holds them."""
    info = machine_info()
    return {"versions": {k: info.get(k) for k in VERSIONS},
            "machine": {k: info.get(k) for k in MACHINE}}


def key(kind: str, settings: Mapping[str, Any], *modules: str) -> dict[str, Any]:
    """The key of a measurement of ``kind`` made by ``modules`` with ``settings``."""
    return {"kind": kind, "settings": json.loads(json.dumps(settings)),
            "code": code_digest(*modules), **environment()}


def path_of(cache_dir: Path, key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return Path(cache_dir) / f"{key['kind']}-{digest}.json"


def provenance(key: Mapping[str, Any], seconds: float, cached: bool) -> dict[str, Any]:
    """When and where a measurement was made: what a report prints beside a cached figure."""
    return {"cached": cached, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "measuring_seconds": round(seconds, 1), "machine": dict(key["machine"]),
            "versions": dict(key["versions"]), "code": key["code"]}


def cached(cache_dir: Path | None, key: Mapping[str, Any], measure: Callable[[], Any],
           ) -> tuple[Any, dict[str, Any]]:
    """The result stored under ``key``, or ``measure()``'s, stored (``cache_dir`` None:
    measured, not stored). Returns (result, :func:`provenance` with ``cached`` true when
    it came from the store)."""
    key = json.loads(json.dumps(key))
    path = None if cache_dir is None else path_of(cache_dir, key)
    if path is not None and path.is_file():
        try:
            entry = json.loads(path.read_text())
            if entry.get("key") != key:
                raise ValueError("made for another key")
            return entry["result"], {**entry["provenance"], "cached": True}
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            log.warning("measurement cache %s: %s; measuring again", path, e)
    start = time.perf_counter()
    result = json.loads(json.dumps(measure()))  # as a stored one reads back: lists, str keys
    made = provenance(key, time.perf_counter() - start, False)
    if path is not None:
        write_json(path, {"key": key, "provenance": made, "result": result})
    return result, made


def describe(made: Mapping[str, Any]) -> str:
    """One line for reports: measured in this run, or cached, with when, where and what."""
    m, v = made["machine"], made["versions"]
    where = (f"{m['cpu']}, {m['physical_cores']} physical / {m['logical_cores']} logical cores; "
             + ", ".join(f"{k} {v[k]}" for k in VERSIONS if v.get(k)))
    how = "cached" if made["cached"] else "measured in this run"
    return (f"{how}: measured {made['measured_at']} in {made['measuring_seconds']:.0f} s on "
            f"{where} (code {made['code'][:12]})")
