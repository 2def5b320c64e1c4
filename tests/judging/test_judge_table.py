"""``benchmarks/judge_table.py``: one real ``judge eval`` per judge and set, tabulated, reports reused."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "judge_table.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("judge_table", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def llmbar_like(path: Path, longer_wins: int, n: int = 6) -> Path:
    """LLMBar's own fields; the longer answer is the human choice in the first ``longer_wins`` rows."""
    rows = []
    for i in range(n):
        good, bad = ("a full answer, as asked", "no") if i < longer_wins else ("yes", "an answer to another question")
        rows.append({"input": f"Question {i}?", "output_1": good, "output_2": bad, "label": 1})
    path.write_text(json.dumps(rows), encoding="utf-8")
    return path


@pytest.mark.slow
def test_tables_of_judges_by_set_and_reports_reused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = load_script()
    natural, adversarial = llmbar_like(tmp_path / "n.json", 6), llmbar_like(tmp_path / "a.json", 1)
    out = tmp_path / "reports"
    args = ["--out-dir", str(out), "--data", f"Natural={natural}", f"Adv={adversarial}", "--judge", "longer", "shorter"]
    assert table.main(args) == 0
    shown = capsys.readouterr().out
    assert "| judge | Natural | Adv |" in shown
    assert "| `longer` | 1.000 ± 0.000 (n 6) | 0.167 ± 0.167 (n 6) |" in shown
    assert "| `shorter` | 0.000 ± 0.000 (n 6) | 0.833 ± 0.167 (n 6) |" in shown
    assert "| `shorter` | Adv | 6 | 0 | 0.833 ± 0.167 | 0.00 | 0.50 | 0.167 ± 0.167 |" in shown
    assert len(list(out.glob("*.json"))) == 4
    natural.unlink()  # a report already there is read, not run again
    assert table.main(args) == 0
    assert "| `longer` | 1.000 ± 0.000 (n 6) |" in capsys.readouterr().out
    assert table.main([*args[:2], "--limit", "3", "--data", f"Adv={adversarial}", "--judge", "longer"]) == 0
    capsys.readouterr()
    assert table.main([*args, "--no-run"]) == 0  # the report on all pairs before the --limit one
    assert "0.167 ± 0.167 (n 6)" in capsys.readouterr().out
    (out / "longer--Adv.json").unlink()
    assert table.main([*args, "--no-run"]) == 0  # else the one on the most pairs
    assert "| `longer` | 1.000 ± 0.000 (n 6) | 0.333 ± 0.333 (n 3) |" in capsys.readouterr().out
