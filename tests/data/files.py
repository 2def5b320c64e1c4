"""Paths of the shared real data files, and a writer for small test files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHARED = Path("/work/shared/data")
HH_FILE = SHARED / "hh-rlhf-harmless-base-test.jsonl.gz"
OASST_FILE = SHARED / "oasst-en-100-tree.jsonl"
PANDALM_FILE = SHARED / "pandalm-testset-v1.json"


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write ``rows`` as JSON Lines (UTF-8) and return ``path``."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path
