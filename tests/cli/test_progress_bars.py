"""Every command that judges, generates or scores shows the one progress bar (count and ETA) on stderr.

Run as a user runs them (a real subprocess), with rich told to draw as on a terminal
(``FORCE_COLOR``), so the live bar's last frame is in stderr: its name, ``done/total`` and ``ETA``.
``judge eval``'s bar is tested in ``tests/judging/test_judge_progress.py``; ``rank`` and
``generate`` had theirs before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test runs the preftune CLI in a subprocess

EXE = shutil.which("preftune") or str(Path(sys.executable).parent / "preftune")
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "160"}
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def bars(stderr: str) -> dict[str, str]:
    """Each bar's last frame, by name: ``{"win rate": "5/5 ... ETA 0:00:00"}``."""
    frames = re.split(r"[\r\n]", ANSI.sub("", stderr))
    found = {}
    for frame in frames:
        match = re.match(r"\s*([a-z][a-z -]*?) [━╸╺ ]+ *(\d+/\d+ .*ETA.*)$", frame)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_win_rate_counts_its_comparisons(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"prompt": f"q{i}", "completion": "x" * (i + 1)} for i in range(5)])
    write_jsonl(tmp_path / "b.jsonl", [{"prompt": f"q{i}", "completion": "yy"} for i in range(5)])
    result = run(
        "win-rate",
        "outputs=a.jsonl",
        "baseline=b.jsonl",
        "judge=longer",
        "eval.lc_bootstrap=5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert bars(result.stderr)["win rate"].startswith("5/5 ")


def test_evaluate_counts_its_batches(tmp_path: Path) -> None:
    rows = [{"prompt": f"Say {i}.", "chosen": f"{i}.", "rejected": "No."} for i in range(10)]
    write_jsonl(tmp_path / "p.jsonl", rows)
    result = run("evaluate", "model.name=tiny-random", "data.eval=p.jsonl", "eval.batch_size=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert bars(result.stderr)["evaluate"].startswith("3/3 ")  # 10 pairs in batches of 4


def test_evaluate_generate_counts_sampling_and_judging(tmp_path: Path) -> None:
    result = run(
        "evaluate",
        "--generate",
        "model.name=tiny-random",
        "prompts=bundled:hh-harmless",
        "limit=3",
        "eval.max_new_tokens=4",
        "eval.batch_size=2",
        "eval.lc_bootstrap=5",
        "eval.judges=[longer]",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    shown = bars(result.stderr)
    assert shown["sampling"].startswith("2/2 ")  # 3 prompts in batches of 2
    assert shown["win rate"].startswith("3/3 ")


def test_train_rm_counts_its_held_out_scoring(tmp_path: Path) -> None:
    rows = [{"prompt": f"Tell me {i}.", "chosen": f"Fact {i}. yes", "rejected": f"Fact {i}. no"} for i in range(12)]
    write_jsonl(tmp_path / "p.jsonl", rows)
    result = run(
        "train-rm",
        "model.name=tiny-random",
        "data.train=p.jsonl",
        "output_dir=rm",
        "data.eval_size=4",
        "optim.epochs=1",
        "optim.batch_size=4",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    shown = bars(result.stderr)
    # 4 held-out pairs = 8 rows, scored in batches of 2 x 4; 8 training pairs in steps of 4
    assert shown["held-out before"].startswith("1/1 ") and shown["held-out after"].startswith("1/1 ")
    assert shown["training"].startswith("2/2 ")
