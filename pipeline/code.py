"""Which source files a module runs: the closure of its imports inside the repository.

Used where "the code" must be exact: distill's snapshots resume only under the code
the training step runs (pipeline/training/loop.py's closure), and the test that every
``dvc.yaml`` stage lists the files its component imports as deps. Imports are read
from the source (``ast``), not executed; lazy imports inside functions count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository: pipeline/ and components/
PACKAGES = ("pipeline", "components")


def _module_file(name: str) -> Path | None:
    """pipeline.a.b -> pipeline/a/b.py or pipeline/a/b/__init__.py (None: not ours)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Module names imported by ``path`` (relative imports resolved; ``from x import y``
    yields x and x.y, since y may be a submodule)."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def import_closure(*modules: str) -> list[Path]:
    """Every repository file that importing ``modules`` can load, their packages'
    ``__init__.py`` included, sorted."""
    todo = list(modules)
    seen: set[Path] = set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        # importing a.b.c runs a/__init__.py and a/b/__init__.py first
        for i in range(1, len(parts) + 1):
            path = _module_file(".".join(parts[:i]))
            if path is not None and path not in seen:
                seen.add(path)
                todo.extend(_imports(path))
    return sorted(seen)


def stage_code(stage: str) -> list[Path]:
    """The files a DVC stage runs: its CLI and its stage module (loaded by name)."""
    return import_closure(f"components.{stage}", f"pipeline.stages.{stage}")


def covering(files: list[Path]) -> list[str]:
    """``files`` as dvc.yaml deps: a package folder where all of its modules are in,
    else the files themselves (repository-relative, sorted)."""
    wanted = set(files)
    out: set[str] = set()
    for path in files:
        folder, best = path.parent, path
        while folder != ROOT and (folder / "__init__.py").is_file() and folder.name not in PACKAGES:
            if not set(folder.rglob("*.py")) <= wanted:
                break
            best, folder = folder, folder.parent
        out.add(best.relative_to(ROOT).as_posix())
    return sorted(out)
