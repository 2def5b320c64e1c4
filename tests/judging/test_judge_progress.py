"""``judge eval``'s progress bar: it counts every comparison, changes no verdict, and shows an ETA."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import preftune.judging.progress as judge_progress
from preftune.judging import BothOrders, FunctionJudge, longer_is_better
from preftune.judging.agreement import judge_agreement
from preftune.progress import StepProgress

EXE = shutil.which("preftune") or str(Path(sys.executable).parent / "preftune")
PAIRS = [(f"prompt {i}", "a longer answer " * (1 + i % 3), "short") for i in range(40)]


class Recording(StepProgress):
    """The real bar, keeping what it was told: its total and how often it advanced."""

    made: ClassVar[list[Recording]] = []

    def __init__(self, total: int, **kwargs: Any) -> None:
        super().__init__(total, **kwargs)
        self.advanced = 0
        Recording.made.append(self)

    def advance(self, stats: dict[str, float]) -> None:
        super().advance(stats)
        self.advanced += 1


class CountingJudge(FunctionJudge):
    """Longer-is-better, counting the lists it is asked."""

    def __init__(self) -> None:
        super().__init__(longer_is_better, name="counting")
        self.lists: list[int] = []

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        self.lists.append(len(pairs))
        return super().judge(prompts, pairs)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> list[Recording]:
    Recording.made = []
    monkeypatch.setattr(judge_progress, "StepProgress", Recording)
    return Recording.made


def test_the_bar_counts_every_comparison_and_changes_no_verdict(recording: list[Recording]) -> None:
    plain = judge_agreement(CountingJudge(), PAIRS, seed=3)
    assert not recording  # no bar unless asked for
    judge = CountingJudge()
    shown = judge_agreement(judge, PAIRS, seed=3, progress=True)
    assert [(bar.total, bar.advanced) for bar in recording] == [(40, 40)]  # the judge's; the baseline has none
    assert shown.to_dict() == plain.to_dict()
    assert judge.lists == [32, 32, 16]  # 16 comparisons (two ordered calls each) per list while the bar counts


def test_chunks_keep_a_judges_batches_full(recording: list[Recording]) -> None:
    judge = CountingJudge()
    verdicts = judge_progress.compare_with_progress(BothOrders(judge, batch_size=50), PAIRS)
    assert verdicts == BothOrders(CountingJudge()).compare_many(PAIRS)
    assert judge.lists == [50, 30]  # chunks of 25 comparisons: each a full batch of 50 ordered calls
    assert recording[0].total == 40 and recording[0].advanced == 40


def test_log_lines_wait_for_quiet_s_and_show_the_eta(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = iter(float(t) for t in range(100))
    monkeypatch.setattr("preftune.progress.time.perf_counter", lambda: next(clock))
    with StepProgress(40, description="judge eval", unit="comparison", quiet_s=5.0) as bar:
        for _ in range(40):
            bar.advance({})
    lines = capsys.readouterr().err.splitlines()
    # the clock is read every 2 comparisons (5% of 40), one second a read: silent until 5 s have passed
    assert lines[0] == "judge eval: comparison 10/40  elapsed 5s  ETA 15s"
    assert lines[-1] == "judge eval: comparison 40/40  elapsed 20s  ETA 0s"
    assert len(lines) == 16
    quick = iter([0.0] * 100)
    monkeypatch.setattr("preftune.progress.time.perf_counter", lambda: next(quick))
    with StepProgress(40, description="judge eval", unit="comparison", quiet_s=5.0) as bar:
        for _ in range(40):
            bar.advance({})
    assert capsys.readouterr().err == ""  # done before 5 s: not a line


def _write_pairs(folder: Path, n: int) -> Path:
    rows = [{"input": f"Say {i}.", "output_1": f"{i}, as asked.", "output_2": "No.", "label": 1} for i in range(n)]
    path = folder / "labelled.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_judge_eval_forced_on_a_terminal_shows_the_count_and_eta(tmp_path: Path) -> None:
    path = _write_pairs(tmp_path, 30)
    env = {**os.environ, "FORCE_COLOR": "1", "COLUMNS": "120"}  # rich draws its live bar as on a terminal
    result = subprocess.run(
        [EXE, "judge", "eval", "judge=random", f"data.eval={path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "judge eval" in result.stderr and "30/30" in result.stderr and "ETA" in result.stderr
    assert "30 pairs judged" in result.stdout


@pytest.mark.slow
def test_judge_eval_of_a_slow_judge_logs_its_progress(tmp_path: Path) -> None:
    (tmp_path / "slow_judge.py").write_text(
        "import time\n\ndef slow(prompt, first, second):\n    time.sleep(0.04)\n"
        "    return 0 if len(first) >= len(second) else 1\n",
        encoding="utf-8",
    )
    path = _write_pairs(tmp_path, 60)  # 120 ordered calls of 0.04 s: about 5 s, past the 3 s of quiet
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [EXE, "judge", "eval", "judge=function:slow_judge:slow", f"data.eval={path}"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("judge eval: comparison ")]
    assert lines and lines[-1].startswith("judge eval: comparison 60/60  elapsed ")
    assert all(" ETA " in line for line in lines)
