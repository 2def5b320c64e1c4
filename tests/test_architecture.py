"""The import arrows of docs/architecture.md, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "preftune"

# Leaf modules: anything may import them; they import nothing of preftune.
LEAVES = {"errors", "files", "run_layout", "progress", "cores"}

# package -> the preftune packages it may import (besides itself and the leaves).
ALLOWED = {
    "objectives": set(),
    "analysis": {"objectives"},
    "data": set(),
    "modeling": {"objectives", "data"},
    "evaluation": {"objectives", "data", "modeling", "generation", "judging"},  # generative evaluation samples
    "generation": {"data", "modeling"},
    "reward": {"data", "modeling"},  # Bradley-Terry reward models: pairs through preftune.data, models through modeling
    "judging": {"data", "modeling", "reward"},  # rows through preftune.data; the local judge loads a model
    "serving": {"modeling"},  # llama.cpp's server; modeling only to find the embedded GGUF
    # the engine: the trainer, sources, hooks, checkpoints
    "training": {"objectives", "data", "modeling", "evaluation", "generation", "judging"},
    # a training run: config -> checks -> stages -> outputs, driving the engine
    "run": {"objectives", "data", "modeling", "evaluation", "generation", "judging", "training"},
    "lab": {"objectives", "data", "modeling", "generation", "training"},  # P3's studies drive the engine, not a run
    # the lab's studies, training runs and their data; P1's gold reward model, answers, evaluation and gradients;
    # P4's rankings with the judges
    "reproduce": {
        "lab",
        "run",
        "training",
        "data",
        "reward",
        "evaluation",
        "modeling",
        "analysis",
        "judging",
        "generation",
    },
    "cli": {
        "lab",
        "reproduce",
        "objectives",
        "analysis",
        "data",
        "modeling",
        "training",
        "run",
        "evaluation",
        "generation",
        "judging",
        "reward",
        "serving",
    },
}


def preftune_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "preftune" and len(parts) > 1:
                found.add(parts[1])
    return found


@pytest.mark.parametrize("package", sorted(p for p in ALLOWED if (SRC / p).is_dir()))
def test_package_imports_only_what_the_architecture_allows(package: str) -> None:
    for path in (SRC / package).rglob("*.py"):
        extra = preftune_imports(path) - ALLOWED[package] - {package} - LEAVES
        assert not extra, f"{path.relative_to(SRC)} imports preftune.{sorted(extra)}"


def test_the_engine_never_imports_the_run() -> None:
    """preftune.training (the engine) knows no run: no module of it imports preftune.run, at the top
    or inside a function; the lab drives the engine alone."""
    for package in ("training", "lab"):
        for path in (SRC / package).rglob("*.py"):
            assert "run" not in preftune_imports(path), f"{path.relative_to(SRC)} imports preftune.run"


def test_nothing_imports_the_cli() -> None:
    for path in SRC.rglob("*.py"):
        if "cli" not in path.relative_to(SRC).parts:
            assert "cli" not in preftune_imports(path), path


@pytest.mark.parametrize("leaf", sorted(LEAVES))
def test_leaves_import_nothing_of_preftune(leaf: str) -> None:
    assert not preftune_imports(SRC / f"{leaf}.py"), f"{leaf}.py imports preftune"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _module_imports(path: Path, modules: set[str]) -> set[str]:
    """The preftune modules ``path`` imports, at module level or inside functions (a lazy import is still
    an arrow); ``from package import name`` counts the submodule ``name`` when there is one, else the package;
    imports only for type checkers (``if TYPE_CHECKING:``) are left out."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module in modules:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found.update(submodules or {node.module})
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def test_no_import_circles_inside_packages() -> None:
    """Within a package, modules import one another in one direction only (issue 20 found four circles)."""
    paths = {_module_name(p): p for p in SRC.rglob("*.py")}
    modules = set(paths)
    arrows = {m: {d for d in _module_imports(p, modules) if d != m} for m, p in paths.items()}
    circles = []
    for start in sorted(modules):
        seen, frontier = set(), list(arrows[start])
        while frontier:
            module = frontier.pop()
            if module == start:
                circles.append(start)
                break
            if module not in seen:
                seen.add(module)
                frontier.extend(arrows[module])
    assert not circles, f"modules on an import circle: {circles}"
