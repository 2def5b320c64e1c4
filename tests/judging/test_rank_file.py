"""``preftune rank``: rankings and pairs that ``preftune train`` reads, and a ranking killed mid-way
that resumes with no judge call repeated (the calls are counted by the judge itself, in a file)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from preftune.data import load_preference_data
from preftune.data.grouped import load_groups
from preftune.errors import PreftuneError
from preftune.judging import FIRST, BothOrders, FunctionJudge, PairwiseJudge, VerdictStore, longer_is_better
from preftune.judging.rank_file import _row_key, rank_rows, read_candidates, write_outputs
from preftune.judging.ranking import Ranking, comparisons_bound

EXE = str(Path(sys.executable).parent / "preftune")
REPO = Path(__file__).resolve().parents[2]


def write_prompts(path: Path, prompts: int = 6, n: int = 5, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(prompts):
        lengths = rng.sample(range(1, 40), n)  # distinct lengths: longer-is-better gives one true order
        rows.append({"prompt": f"Question {i}?", "completions": [("w " * k).strip() for k in lengths]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_rankings_and_pairs_are_what_train_reads(tmp_path: Path) -> None:
    rows = read_candidates(write_prompts(tmp_path / "gen.jsonl"))
    report = rank_rows(rows, FunctionJudge(longer_is_better), store=VerdictStore(tmp_path / "v.sqlite"))
    write_outputs(rows, report, tmp_path / "ranked.jsonl", tmp_path / "pairs.jsonl", "best_vs_worst")
    for row, ranking in zip(rows, report.rankings, strict=True):
        lengths = [len(c) for c in row.completions]
        assert list(ranking.order) == sorted(range(5), key=lambda k: -lengths[k])
        assert ranking.comparisons <= comparisons_bound(5)
    # both orders of every comparison, and of a best-vs-worst check the ranking had not made, reached
    # the judge once: the check reuses the ranking's verdict, so the calls stay within IPR's bound
    assert report.judge_calls <= 2 * (report.comparisons + report.checks) and report.store_answers == 0
    again = rank_rows(rows, FunctionJudge(longer_is_better), store=VerdictStore(tmp_path / "v.sqlite"))
    assert again.judge_calls == 0 and again.store_answers == report.judge_calls  # a rerun asks nothing
    assert f"{report.judge_calls} ordered judge calls made" in str(report)
    assert f"0 ordered judge calls made (0.0 per prompt), {report.judge_calls} answered by the verdict store" in (
        str(again)
    )
    groups, _ = load_groups(tmp_path / "ranked.jsonl")
    pairs, _ = load_preference_data(tmp_path / "pairs.jsonl")
    assert len(groups) == len(pairs) == 6 and report.pairs == 6
    for group, pair, row in zip(groups, pairs, rows, strict=True):
        assert max(group.completions, key=len) == pair.chosen == max(row.completions, key=len)
        assert pair.rejected == min(row.completions, key=len)


class PositionBiased(PairwiseJudge):
    def identity(self) -> str:
        return "test:always-first"

    def judge(self, prompts, pairs) -> list[int]:
        return [FIRST] * len(pairs)


def test_a_judge_that_cannot_decide_gives_no_pairs(tmp_path: Path) -> None:
    rows = read_candidates(write_prompts(tmp_path / "gen.jsonl", prompts=3))
    report = rank_rows(rows, PositionBiased())
    write_outputs(rows, report, tmp_path / "ranked.jsonl", tmp_path / "pairs.jsonl", "all")
    assert report.decided == [False] * 3 and report.pairs == 0
    assert (tmp_path / "pairs.jsonl").read_text() == ""


def test_bad_rows_are_refused_with_file_and_row_before_any_call(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completions": ["x", "y"]}\n{"prompt": "b", "completions": ["only one"]}\n')
    with pytest.raises(PreftuneError, match=r"bad.jsonl row 2: 'completions' must be a list of at least 2"):
        read_candidates(path)


def _rank(tmp_path: Path, store: str, kill_after: int = 0) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PREFTUNE_TEST_CALLS": str(tmp_path / f"{store}.calls"),
        "PREFTUNE_TEST_KILL_AFTER": str(kill_after),
        "PYTHONPATH": str(REPO),
    }
    command = [
        EXE,
        "rank",
        f"input={tmp_path / 'gen.jsonl'}",
        "judge=function:tests.judging.counting:judge",
        f"out={tmp_path / f'{store}.jsonl'}",
        f"store={tmp_path / f'{store}.sqlite'}",
    ]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_a_killed_ranking_resumes_with_no_call_repeated(tmp_path: Path) -> None:
    write_prompts(tmp_path / "gen.jsonl", prompts=4, n=6)
    whole = _rank(tmp_path, "whole")
    assert whole.returncode == 0, whole.stderr
    calls = (tmp_path / "whole.calls").read_text().splitlines()
    killed = _rank(tmp_path, "resumed", kill_after=len(calls) // 2)
    assert killed.returncode == -9 and not (tmp_path / "resumed.jsonl").exists()
    resumed = _rank(tmp_path, "resumed")
    assert resumed.returncode == 0, resumed.stderr
    made = (tmp_path / "resumed.calls").read_text().splitlines()
    in_flight = made[len(calls) // 2 - 1]  # the call the process died in: its answer never came back
    assert set(made) == set(calls) and len(made) == len(calls) + 1 and made.count(in_flight) == 2
    assert (tmp_path / "resumed.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()


def test_the_store_answers_a_second_wrapper(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "v.sqlite")
    first = BothOrders(FunctionJudge(longer_is_better), store)
    first.compare("p", "long answer", "short")
    second = BothOrders(FunctionJudge(longer_is_better), VerdictStore(tmp_path / "v.sqlite"))
    assert second.compare("p", "short", "long answer").name == "B" and second.calls == 0


def test_string_completions_of_conversational_prompts_become_assistant_messages(tmp_path: Path) -> None:
    """``preftune generate`` writes completions as text; after a message-list prompt, training needs messages."""
    path = tmp_path / "gen.jsonl"
    row = {"prompt": [{"role": "user", "content": "Hi?"}], "completions": ["Hello there, friend.", "Yo."]}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    rows = read_candidates(path)
    report = rank_rows(rows, FunctionJudge(longer_is_better))
    write_outputs(rows, report, tmp_path / "ranked.jsonl", tmp_path / "pairs.jsonl", "best_vs_worst")
    pairs, _ = load_preference_data(tmp_path / "pairs.jsonl")
    groups, _ = load_groups(tmp_path / "ranked.jsonl")
    assert pairs[0].chosen == [{"role": "assistant", "content": "Hello there, friend."}]
    assert groups[0].is_conversational and len(groups[0].completions) == 2


def test_compare_reports_kendall_tau_and_top1_against_another_ranking(tmp_path, capsys):
    from preftune.cli.main import main

    rows = [{"prompt": f"q{i}", "completions": ["aa", "a" * (5 + i), "aaa", "a" * 9]} for i in range(3)]
    source = tmp_path / "gen.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    longer, shorter = tmp_path / "longer.jsonl", tmp_path / "shorter.jsonl"
    assert main(["rank", f"input={source}", "judge=longer", f"out={longer}"]) == 0
    capsys.readouterr()
    argv = ["rank", f"input={source}", "judge=shorter", f"out={shorter}", f"compare={longer}"]
    assert main(argv) == 0
    assert "agreement over 3 prompts: Kendall tau -1.000 ± 0.000, same best completion 0.000" in capsys.readouterr().err
    argv = ["rank", f"input={source}", "method=round_robin", f"out={tmp_path / 'rr.jsonl'}", f"compare={longer}"]
    assert main(argv) == 0
    assert "Kendall tau 1.000 ± 0.000, same best completion 1.000" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q0", "completions": ["a", "b"]}) + "\n")
    assert main(["rank", f"input={source}", f"out={tmp_path / 'x.jsonl'}", f"compare={bad}"]) == 2
    assert "'ranks'" in capsys.readouterr().err and not (tmp_path / "x.jsonl").exists()


def test_compare_rankings_by_hand(tmp_path):
    from preftune.judging.rank_file import RankReport, compare_rankings

    (tmp_path / "g.jsonl").write_text(json.dumps({"prompt": "p", "completions": ["x", "y", "z"]}) + "\n")
    rows = read_candidates(tmp_path / "g.jsonl")
    report = RankReport(rankings=[Ranking(order=(0, 1, 2), comparisons=3, failed=0, method="ipr")])
    other = {_row_key("p", ["x", "y", "z"]): [1, 0, 2]}  # one of three pairs swapped: tau = (2 - 1) / 3
    agreement = compare_rankings(rows, report, other)
    assert agreement.prompts == 1 and agreement.tau == pytest.approx(1 / 3) and agreement.top1 == 0.0
