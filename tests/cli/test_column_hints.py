"""A file whose columns have other names: every command that reads it says, in one line, how to map them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs the preftune CLI in a subprocess

EXE = shutil.which("preftune") or str(Path(sys.executable).parent / "preftune")
ROWS = [{"question": f"Say {i}.", "good": f"{i}, as asked.", "bad": "No."} for i in range(4)]
HINT = (
    "d.jsonl: no 'chosen' column; found ['question', 'good', 'bad']; map the file's columns onto the expected "
    "names, e.g. data.columns.prompt=question data.columns.chosen=good data.columns.rejected=bad"
)
SETTINGS = ["data.columns.prompt=question", "data.columns.chosen=good", "data.columns.rejected=bad"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["train", "data.train=d.jsonl", "output_dir=out"],
        ["train-rm", "data.train=d.jsonl", "output_dir=rm"],
        ["evaluate", "model.name=tiny-random", "data.eval=d.jsonl"],
        ["judge", "eval", "judge=longer", "data.eval=d.jsonl"],
    ],
    ids=["train", "train-rm", "evaluate", "judge-eval"],
)
def test_unknown_column_names_get_the_settings_that_map_them(data: Path, args: list[str]) -> None:
    result = run(*args, cwd=data.parent)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {HINT}"]
    assert not (data.parent / "out").exists() and not (data.parent / "rm").exists()  # refused before anything ran


def test_judge_eval_takes_the_settings_the_hint_names(data: Path) -> None:
    result = run("judge", "eval", "judge=longer", "data.eval=d.jsonl", *SETTINGS, cwd=data.parent)
    assert result.returncode == 0, result.stderr
    assert "d.jsonl: 4 pairs judged" in result.stdout
    assert "longer (baseline)     1.000 ± 0.000" in result.stdout  # 'good' is the longer answer every time
    refused = run("judge", "eval", "judge=longer", "data.eval=d.jsonl", "optim.lr=1", cwd=data.parent)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "error: judge eval: setting does not exist: 'optim.lr' (a 'preftune train' setting); "
        "'preftune judge eval --help' lists the settings"
    )


def test_no_name_close_still_names_every_setting(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(json.dumps({"a": "q", "b": "r", "c": "s"}) + "\n", encoding="utf-8")
    result = run("judge", "eval", "judge=longer", "data.eval=x.jsonl", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: x.jsonl: no 'chosen' column; found ['a', 'b', 'c']; map the file's columns onto the expected names "
        "with data.columns.prompt=COLUMN data.columns.chosen=COLUMN data.columns.rejected=COLUMN"
    )


def test_generate_names_the_prompt_column_to_rename(data: Path) -> None:
    result = run("generate", "prompts=d.jsonl", "model.name=tiny-random", "out=g.jsonl", cwd=data.parent)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: d.jsonl row 1: no prompt:")
    assert lines[0].endswith("found bad, good, question; rename 'question' to 'prompt'")
