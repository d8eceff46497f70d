"""models:/<name>/<version-or-alias> sources: a checkpoint file in the MLflow Model Registry.

The registry is the one MLflow is configured for (MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI).
An alias or "latest" is resolved to a version number first, so the cache key names an
immutable model version and moving an alias fetches the new version.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import FetchError
from pipeline.fetch.common import redact_uri, scrub
from pipeline.io import sha256_file

CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".pkl", ".ckpt")


def _parse(uri: str) -> tuple[str, str | None, str | None]:
    """(name, version, alias): ``models:/name/3`` -> (name, "3", None); ``models:/name@a`` or
    ``models:/name/a`` -> (name, None, "a"); ``models:/name/latest`` -> (name, None, None)."""
    path = uri[len("models:"):].lstrip("/")
    if "/" in path:
        name, _, ref = path.partition("/")
    else:
        name, _, ref = path.rpartition("@")
    if not name or not ref or "/" in ref:
        raise FetchError(f"{uri}: not a valid registry URI; expected models:/<name>/<version>, "
                         "models:/<name>/<alias>, models:/<name>@<alias> or models:/<name>/latest.")
    if ref.isdigit():
        return name, ref, None
    if ref.lower() == "latest":
        return name, None, None
    return name, None, ref


def _registry_error(e: Exception, source: str, registry: str, raw_registry: str) -> FetchError:
    message = scrub(str(getattr(e, "message", e)), raw_registry).rstrip(".")
    return FetchError(f"{source}: {message} (registry {registry}); check the model name and "
                      "version/alias, and MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI.")


def _registry() -> tuple[Any, str, str]:
    import mlflow  # heavy import, only when a models:/ source is used

    raw = mlflow.get_registry_uri()
    return mlflow.MlflowClient(), raw, redact_uri(raw)


def resolve(uri: str) -> tuple[str, str]:
    """(cache key, ``models:/name/<version>``) for a models:/ URI: aliases and "latest" are
    looked up so the key names one immutable version in one registry."""
    from mlflow.exceptions import MlflowException

    name, version, alias = _parse(uri)
    client, raw, registry = _registry()
    try:
        if alias is not None:
            version = str(client.get_model_version_by_alias(name, alias).version)
        elif version is None:
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise FetchError(f"{uri}: registered model {name!r} has no versions "
                                 f"(registry {registry}); register one or check the name.")
            version = str(max(int(v.version) for v in versions))
    except MlflowException as e:
        raise _registry_error(e, uri, registry, raw) from None
    pinned = f"models:/{name}/{version}"
    return f"{pinned} @ {raw}", pinned


def download(version_uri: str, workdir: Path, *, source: str) -> tuple[Path, str, int]:
    """Download the model version's artifacts into ``workdir`` and return its single
    checkpoint file as (file, sha256, size)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _, raw, registry = _registry()
    try:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=version_uri,
                                                        dst_path=str(workdir)))
    except MlflowException as e:
        raise _registry_error(e, source, registry, raw) from None
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    found = [p for p in files if p.suffix.lower() in CHECKPOINT_SUFFIXES]
    if len(found) != 1:
        listing = ", ".join(str(p.relative_to(root) if root.is_dir() else p.name) for p in files)
        problem = "no checkpoint file" if not found else f"{len(found)} checkpoint files"
        raise FetchError(
            f"{source}: {version_uri} holds {problem} (looked for "
            f"{', '.join(CHECKPOINT_SUFFIXES)}); its files: {listing or 'none'}. "
            "Register a model version with exactly one checkpoint."
        )
    return found[0], sha256_file(found[0]), found[0].stat().st_size
