"""preftune.modeling imports only errors, objectives' records and data.batch (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import preftune.modeling

ALLOWED = {"preftune.errors", "preftune.files", "preftune.objectives.records", "preftune.data.batch"}
PACKAGE = Path(preftune.modeling.__file__).parent


def test_modeling_imports_only_what_it_may() -> None:
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.startswith("preftune.") and not name.startswith("preftune.modeling"):
                    assert name in ALLOWED, f"{path.name} imports {name}"
