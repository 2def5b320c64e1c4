"""Shared fixtures of the reproduction tests: one tiny gold model for the whole session."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from preftune.data import bundled_path


def bundled_rows(start: int, stop: int) -> str:
    """Rows ``start..stop`` of the bundled HH-RLHF subset, as JSON lines."""
    with gzip.open(bundled_path("hh-harmless"), "rt", encoding="utf-8") as handle:
        return "".join(line for i, line in enumerate(handle) if start <= i < stop)


@pytest.fixture(scope="session")
def gold_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the gold pairs' file: bundled rows 0..40, the gold cache): every paper's test scale trains the same
    tiny gold model from them, so the session trains it once."""
    tmp = tmp_path_factory.mktemp("gold")
    (tmp / "gold.jsonl").write_text(bundled_rows(0, 40), encoding="utf-8")
    return tmp / "gold.jsonl", tmp / "cache"
