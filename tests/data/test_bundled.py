"""The bundled HH-RLHF subset: present, licensed, valid, and reproducible by its script."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

from preftune.data import bundled_path, load_preference_data
from preftune.errors import PreftuneError
from tests.data.files import HH_FILE


def test_bundled_subset_is_valid_and_short() -> None:
    path = bundled_path("hh-harmless")
    examples, summary = load_preference_data(path)  # raises on any invalid row
    assert summary.format == "implicit" and summary.rows_read == summary.kept == 1200
    for example in examples:
        chosen, rejected = example.chosen[0]["content"], example.rejected[0]["content"]
        assert chosen != rejected
        assert len(chosen.split()) <= 64 and len(rejected.split()) <= 64
        assert sum(len(m["content"].split()) for m in example.prompt) <= 200
    turns = {sum(m["role"] == "user" for m in e.prompt) for e in examples}
    assert 1 in turns and max(turns) > 1  # single- and multi-turn


def test_licence_and_readme_travel_with_it() -> None:
    folder = bundled_path("hh-harmless").parent
    licence = (folder / "LICENSE-hh-rlhf.txt").read_text(encoding="utf-8")
    assert "MIT License" in licence and "Copyright (c) 2022 Anthropic" in licence and "anthropics/hh-rlhf" in licence
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert "harmless-base/test.jsonl.gz" in readme and "make_subset.py" in readme


def test_unknown_name() -> None:
    with pytest.raises(PreftuneError, match="no bundled data named 'hh'"):
        bundled_path("hh")


@pytest.mark.skipif(not HH_FILE.is_file(), reason="the shared HH-RLHF file is not here")
def test_make_subset_reproduces_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = bundled_path("hh-harmless").parent / "make_subset.py"
    out = tmp_path / "subset.jsonl.gz"
    monkeypatch.setattr(sys, "argv", [str(script), "--source", str(HH_FILE), "--output", str(out)])
    runpy.run_path(str(script), run_name="__main__")
    assert out.read_bytes() == bundled_path("hh-harmless").read_bytes()
