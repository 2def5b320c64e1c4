"""A judge's agreement with human labels (``judge_agreement``) and ``preftune judge eval``."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from preftune.data.load import load_preference_data
from preftune.judging import FAILED, FIRST, SECOND, FunctionJudge, PairwiseJudge, RandomJudge, VerdictStore
from preftune.judging.agreement import judge_agreement, mean_stderr, presentation_order
from tests.data.files import PANDALM_FILE, write_jsonl

EXE = shutil.which("preftune") or str(Path(sys.executable).parent / "preftune")


def panda_row(prompt: str, first: str, second: str, label: str) -> dict:
    """A PandaLM-shaped labelled row; all three annotators say ``label``."""
    return {"instruction": prompt, "input": "", "response1": first, "response2": second} | {
        f"annotator{i}": label for i in (1, 2, 3)
    }


def load(path: Path):
    return load_preference_data(path, format="labelled")


class AlwaysFirst(PairwiseJudge):
    def identity(self) -> str:
        return "always-first"

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        return [FIRST] * len(pairs)


def oracle(chosen: set[str]) -> FunctionJudge:
    """A judge that always picks the response people preferred."""
    return FunctionJudge(lambda prompt, first, second: FIRST if first in chosen else SECOND, name="oracle")


def many_pairs(n: int) -> list[tuple[str, str, str]]:
    return [(f"question {i}?", f"good answer {i}", f"bad answer {i}") for i in range(n)]


def test_a_judge_that_picks_the_human_choice_agrees_fully(tmp_path: Path) -> None:
    rows = [panda_row(f"q{i}", f"first {i}", f"second {i}!", "1" if i % 2 else "2") for i in range(20)]
    rows.append(panda_row("tied", "x", "y", "0"))
    examples, summary = load(write_jsonl(tmp_path / "pairs.jsonl", rows))
    report = judge_agreement(oracle({e.chosen for e in examples}), examples, seed=3, human_ties=summary.labels["tie"])
    score = report.judge
    assert (score.agreement, score.stderr, score.ties, score.tie_rate, score.failed) == (1.0, 0.0, 0, 0.0, 0)
    assert score.first_rate == 0.5  # one FIRST per pair, whatever the order
    assert (report.pairs, report.human_ties, score.scored, score.human) == (20, 1, 20, 20)
    assert 0 < report.human_first < 20  # the human choice is not always shown first


def test_longer_agrees_where_the_chosen_is_longer(tmp_path: Path) -> None:
    rows = [
        panda_row("a", "a long preferred answer", "short", "1"),
        panda_row("b", "short", "a long preferred answer", "2"),
        panda_row("c", "tiny", "a longer answer people liked", "2"),
        panda_row("d", "a long rejected answer", "brief", "2"),  # people chose the shorter
    ]
    examples, _ = load(write_jsonl(tmp_path / "pairs.jsonl", rows))
    report = judge_agreement(FunctionJudge("preftune.judging.functions:longer_is_better"), examples)
    assert report.judge.agreement == report.baseline.agreement == 0.75
    assert (report.judge.human, report.judge.other, report.judge.ties) == (3, 1, 0)
    assert report.baseline.judge == "longer (baseline)"
    assert report.judge.stderr == pytest.approx(0.25)  # sd of (1, 1, 1, 0) is 0.5; /√4


def test_always_first_is_all_position_bias() -> None:
    report = judge_agreement(AlwaysFirst(), many_pairs(10))
    score = report.judge
    assert (score.agreement, score.ties, score.tie_rate, score.first_rate) == (0.5, 10, 1.0, 1.0)
    assert (score.human, score.other) == (0, 0)
    assert report.baseline.agreement == 1.0  # the good answers are the longer ones here


def test_random_judge_agrees_about_half_the_time() -> None:
    report = judge_agreement(RandomJudge(7), many_pairs(400), seed=1)
    score = report.judge
    assert abs(score.agreement - 0.5) < 0.07  # s.e. ≈ 0.018
    assert 0.4 < score.tie_rate < 0.6 and 0.4 < score.first_rate < 0.6
    assert score.stderr == pytest.approx(math.sqrt(0.125 / 400), rel=0.2)


def test_failed_comparisons_are_left_out_and_counted() -> None:
    def flaky(prompt: str, first: str, second: str) -> int:
        if prompt.endswith("3?") or prompt.endswith("7?"):
            return FAILED
        return FIRST if first.startswith("good") else SECOND

    report = judge_agreement(FunctionJudge(flaky, name="flaky"), many_pairs(10))
    assert (report.judge.failed, report.judge.scored, report.judge.agreement) == (2, 8, 1.0)
    assert report.baseline.failed == 0


def test_same_orders_for_a_seed_and_a_store_spares_every_call(tmp_path: Path) -> None:
    assert presentation_order(50, 0)[:10] == presentation_order(10, 0)  # --limit keeps the orders
    assert presentation_order(50, 0) != presentation_order(50, 1)
    pairs = many_pairs(30)
    with VerdictStore(tmp_path / "v.sqlite") as store:
        first = judge_agreement(RandomJudge(2), pairs, store, seed=5)
        again = judge_agreement(RandomJudge(2), pairs, store, seed=5)
    assert first.judge.calls == 60 and again.judge.calls == 0
    assert {**first.judge.to_dict(), "calls": 0} == again.judge.to_dict()  # raw answers read back from the store


def test_mean_stderr_matches_the_evaluation_helper() -> None:
    torch = pytest.importorskip("torch")
    from preftune.evaluation.statistical import mean_and_stderr

    values = [1.0, 0.5, 0.0, 1.0, 1.0, 0.5, 0.0]
    expected = mean_and_stderr(torch.tensor(values))
    assert mean_stderr(values) == pytest.approx((expected.mean, expected.stderr))
    assert math.isnan(mean_stderr([1.0])[1]) and math.isnan(mean_stderr([])[0])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(not PANDALM_FILE.exists(), reason="shared PandaLM file not present")
def test_cli_on_real_pandalm_shows_the_baseline(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    data = str(PANDALM_FILE)
    result = run(
        "judge", "eval", "judge=longer", f"data.eval={data}", "data.skip_invalid=true", "limit=200", f"out={out}"
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^longer \(baseline\)\s+\d\.\d{3} ± \d\.\d{3}", result.stdout, re.MULTILINE), result.stdout
    report = json.loads(out.read_text(encoding="utf-8"))
    agreement = report["judge"]["agreement"]
    print(f"longer-is-better agreement with PandaLM's people, first 200 pairs: {agreement:.3f}")
    assert 0.5 <= agreement <= 0.85
    assert report["pairs"] == report["judge"]["scored"] == 200 and report["human_ties_dropped"] == 105
    assert report["baseline"]["agreement"] == agreement


@pytest.mark.slow
def test_cli_bad_judge_spec_is_one_error_line(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "pairs.jsonl", [panda_row("q", "long answer", "short", "1")])
    result = run("judge", "eval", "judge=bogus", f"data.eval={data}")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown judge 'bogus'") and result.stderr.count("\n") == 1
    missing = run("judge", "eval", "judge=longer", f"data.eval={tmp_path / 'nope.jsonl'}")
    assert missing.returncode == 2 and missing.stderr.startswith("error:") and missing.stderr.count("\n") == 1


def test_a_declared_tie_counts_half_and_names_no_position() -> None:
    """A judge that says "a tie" (MT-Bench's [[C]]) on some pairs and always says "the first" on the
    others: the ties count half in agreement, and the first-position rate reads only the answers
    that name a position (all of them "first": 1.0, where counting the ties as "not first" gave 0.6)."""
    from preftune.judging import TIE

    def judge(prompt: str, first: str, second: str) -> int:
        return TIE if int(prompt.split()[1].rstrip("?")) < 4 else FIRST

    report = judge_agreement(FunctionJudge(judge, name="ties"), many_pairs(10))
    score = report.judge
    assert (score.ties, score.failed, score.agreement) == (10, 0, 0.5)
    assert score.first_rate == 1.0
