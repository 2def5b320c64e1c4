"""Pairwise judges, the both-orders tie rule and the SQLite verdict cache (docs/methods.md §5)."""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

import pytest

from preftune.errors import PreftuneError
from preftune.judging import (
    FAILED,
    FIRST,
    SECOND,
    TIE,
    BothOrders,
    FunctionJudge,
    PairwiseJudge,
    RandomJudge,
    Verdict,
    VerdictStore,
    longer_is_better,
    shorter_is_better,
)

SRC = Path(__file__).resolve().parents[2] / "src"


class Scripted(PairwiseJudge):
    """Answers from a table keyed by (first, second); counts the ordered calls and judge() batches."""

    def __init__(self, answers: dict[tuple[str, str], int] | None = None, default: int = FIRST):
        self.answers = dict(answers or {})
        self.default = default
        self.asked: list[tuple[str, str, str]] = []
        self.batches = 0

    def identity(self) -> str:
        return "scripted:test"

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        self.batches += 1
        out = []
        for prompt, (first, second) in zip(prompts, pairs, strict=True):
            self.asked.append((prompt, first, second))
            out.append(self.answers.get((first, second), self.default))
        return out


ANSWERS = (FIRST, SECOND, TIE, FAILED)
EXPECTED = {
    (FIRST, SECOND): Verdict.A,
    (SECOND, FIRST): Verdict.B,
    (FIRST, FIRST): Verdict.TIE,
    (SECOND, SECOND): Verdict.TIE,
    **{(TIE, other): Verdict.TIE for other in (FIRST, SECOND, TIE)},  # a judge's own tie, in either order
    **{(other, TIE): Verdict.TIE for other in (FIRST, SECOND)},
}


@pytest.mark.parametrize(("forward", "backward"), list(itertools.product(ANSWERS, ANSWERS)))
def test_tie_rule_on_every_combination_of_answers(forward: int, backward: int) -> None:
    judge = Scripted({("a", "b"): forward, ("b", "a"): backward})
    both = BothOrders(judge)
    verdict = both.compare("p", "a", "b")
    assert verdict == EXPECTED.get((forward, backward), Verdict.FAILED)
    assert sorted(judge.asked) == [("p", "a", "b"), ("p", "b", "a")]
    assert both.calls == 2


def test_position_biased_judge_gives_only_ties() -> None:
    both = BothOrders(Scripted(default=FIRST))
    items = [("p", f"x{i}", f"y{i}") for i in range(5)]
    assert both.compare_many(items) == [Verdict.TIE] * 5
    assert BothOrders(Scripted(default=SECOND)).compare_many(items) == [Verdict.TIE] * 5


def test_identical_completions_tie_without_a_call(tmp_path: Path) -> None:
    judge = Scripted()
    both = BothOrders(judge, VerdictStore(tmp_path / "v.sqlite"))
    assert both.compare("p", "same", "same") == Verdict.TIE
    assert both.compare_many([("p", "same", "same"), ("q", "", "")]) == [Verdict.TIE, Verdict.TIE]
    assert judge.asked == [] and both.calls == 0 and len(both.store) == 0


def test_batched_calls_go_to_the_judge_in_one_list(tmp_path: Path) -> None:
    judge = Scripted({("a", "b"): FIRST, ("b", "a"): SECOND, ("c", "d"): SECOND, ("d", "c"): FIRST})
    both = BothOrders(judge, VerdictStore(tmp_path / "v.sqlite"))
    # the repeated item and the reversed item share ordered calls: each is asked once
    items = [("p", "a", "b"), ("p", "c", "d"), ("p", "a", "b"), ("p", "b", "a")]
    assert both.compare_many(items) == [Verdict.A, Verdict.B, Verdict.A, Verdict.B]
    assert judge.batches == 1 and both.calls == 4 and len(judge.asked) == 4


def test_batch_size_splits_the_calls() -> None:
    judge = Scripted()
    both = BothOrders(judge, batch_size=3)
    both.compare_many([("p", f"a{i}", f"b{i}") for i in range(4)])  # 8 ordered calls
    assert judge.batches == 3 and both.calls == 8


def test_failed_call_is_not_stored_and_is_retried(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "v.sqlite")
    judge = Scripted({("a", "b"): FIRST, ("b", "a"): FAILED})
    both = BothOrders(judge, store)
    assert both.compare("p", "a", "b") == Verdict.FAILED
    assert len(store) == 1  # the answered order is kept, the failed one is not
    assert store.get(judge.identity(), "p", "b", "a") is None

    judge.answers[("b", "a")] = SECOND  # the judge recovers
    assert both.compare("p", "a", "b") == Verdict.A
    assert judge.asked[2:] == [("p", "b", "a")]  # only the failed call was asked again
    assert both.calls == 3 and len(store) == 2


def test_second_wrapper_over_the_same_store_makes_no_calls(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "verdicts.sqlite"  # parent folders are created
    items = [("p", f"answer {i}", "x" * i) for i in range(6)]
    first = BothOrders(FunctionJudge(longer_is_better), VerdictStore(path))
    verdicts = first.compare_many(items)
    assert first.calls == 12

    judge = FunctionJudge(longer_is_better)
    counted = []
    original = judge.fn
    judge.fn = lambda *args: counted.append(args) or original(*args)
    second = BothOrders(judge, VerdictStore(path))  # a second connection, as a new process would open
    assert second.compare_many(items) == verdicts
    assert second.calls == 0 and counted == []
    # a different judge identity does not reuse those verdicts
    third = BothOrders(FunctionJudge(shorter_is_better), VerdictStore(path))
    third.compare_many(items)
    assert third.calls == 12


@pytest.mark.slow
def test_store_keeps_verdicts_written_before_a_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    n, k = 20, 7
    child = textwrap.dedent(
        f"""
        import os, signal
        from preftune.judging import VerdictStore
        store = VerdictStore({str(path)!r})
        for i in range({n}):
            if i == {k}:
                os.kill(os.getpid(), signal.SIGKILL)
            store.put("judge", "prompt", f"first {{i}}", "second", i % 2)
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, timeout=60)
    assert result.returncode == -9, result.stderr.decode()
    store = VerdictStore(path)
    assert len(store) == k
    assert [store.get("judge", "prompt", f"first {i}", "second") for i in range(k + 1)] == [i % 2 for i in range(k)] + [
        None
    ]


def test_store_holds_hashes_not_texts(tmp_path: Path) -> None:
    path = tmp_path / "v.sqlite"
    secret = "Zanzibar-quokka-7731 prompt text"
    store = VerdictStore(path)
    store.put("judge", secret, "completion Zanzibar one", "completion two", FIRST)
    assert store.get("judge", secret, "completion Zanzibar one", "completion two") == FIRST
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the db and its WAL
    assert b"judge" in blob  # the file was written: the identity is there in clear
    assert b"Zanzibar" not in blob
    store.close()
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"Zanzibar" not in blob
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(verdicts)")]
    assert columns == ["judge", "prompt_sha256", "first_sha256", "second_sha256", "verdict", "created"]


def test_store_refuses_to_store_a_failure(tmp_path: Path) -> None:
    with VerdictStore(tmp_path / "v.sqlite") as store:
        with pytest.raises(ValueError):
            store.put("judge", "p", "a", "b", FAILED)
        assert len(store) == 0


def test_a_tie_is_stored_and_never_asked_again_while_a_failure_beside_it_is(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "v.sqlite")
    judge = Scripted({("a", "b"): TIE, ("b", "a"): FAILED})
    both = BothOrders(judge, store)
    assert both.compare("p", "a", "b") == Verdict.FAILED
    assert store.get(judge.identity(), "p", "a", "b") == TIE and len(store) == 1
    judge.answers[("b", "a")] = FIRST
    assert both.compare("p", "a", "b") == Verdict.TIE
    assert judge.asked[2:] == [("p", "b", "a")]  # the tie came from the store
    assert BothOrders(judge, VerdictStore(tmp_path / "v.sqlite")).compare("p", "b", "a") == Verdict.TIE
    assert len(judge.asked) == 3


@pytest.mark.parametrize("kind", ["text", "folder", "foreign", "under_a_file"])
def test_a_path_that_cannot_hold_a_store_is_one_clear_error(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "store"
    if kind == "text":
        path.write_text("prompt,chosen\nnot,a database at all\n" * 50)
    elif kind == "folder":
        path.mkdir()
    elif kind == "foreign":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE verdicts (id INTEGER, label TEXT)")
    else:
        (tmp_path / "file").write_text("x")
        path = tmp_path / "file" / "v.sqlite"
    before = path.read_bytes() if path.is_file() else None
    with pytest.raises(PreftuneError, match="verdict store"):
        VerdictStore(path)
    if before is not None:
        assert path.read_bytes() == before  # refused without being touched


def test_function_judge_from_a_spec() -> None:
    judge = FunctionJudge("preftune.judging.functions:longer_is_better")
    assert judge.identity() == "function:preftune.judging.functions:longer_is_better"
    # the same function reached through the package re-export has the same identity
    assert FunctionJudge("preftune.judging:longer_is_better").identity() == judge.identity()
    assert FunctionJudge(longer_is_better).identity() == judge.identity()
    assert judge.judge(["p", "p", "p"], [("long", "s"), ("s", "long"), ("ab", "cd")]) == [FIRST, SECOND, FIRST]
    both = BothOrders(judge)
    assert both.compare("p", "long", "s") == Verdict.A
    assert both.compare("p", "s", "long") == Verdict.B
    assert both.compare("p", "ab", "cd") == Verdict.TIE  # equal lengths: FIRST twice → tie
    assert BothOrders(FunctionJudge(shorter_is_better)).compare("p", "long", "s") == Verdict.B


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("preftune.judging.functions.longer_is_better", "module:function"),
        ("no_such_module_xyz:fn", "cannot import module"),
        ("preftune.judging.functions:no_such_function", "has no"),
        ("preftune.judging.base:FIRST", "not callable"),
    ],
)
def test_bad_function_specs_are_one_line_errors(spec: str, needle: str) -> None:
    with pytest.raises(PreftuneError) as info:
        FunctionJudge(spec)
    message = str(info.value)
    assert needle in message and spec in message and "\n" not in message


def test_function_judge_turns_one_failure_into_failed() -> None:
    def flaky(prompt: str, first: str, second: str) -> int:
        if first == "boom":
            raise RuntimeError("api down")
        return 7 if first == "junk" else FIRST

    judge = FunctionJudge(flaky, name="flaky-v1")
    assert judge.identity() == "function:flaky-v1"
    assert judge.judge(["p"] * 3, [("boom", "x"), ("junk", "x"), ("ok", "x")]) == [FAILED, FAILED, FIRST]


def test_random_judge_is_reproducible_and_fair() -> None:
    pairs = [(f"first {i}", f"second {i}") for i in range(200)]
    prompts = [f"prompt {i % 7}" for i in range(200)]
    answers = RandomJudge(seed=3).judge(prompts, pairs)
    assert answers == RandomJudge(seed=3).judge(prompts, pairs)
    assert set(answers) == {FIRST, SECOND}
    assert 70 <= answers.count(FIRST) <= 130  # ~half (binomial sd ≈ 7)
    assert answers != RandomJudge(seed=4).judge(prompts, pairs)
    assert RandomJudge(seed=3).identity() == "random:seed=3" != RandomJudge(seed=4).identity()


def test_a_judge_serving_several_calls_gets_batches_of_four_times_its_concurrency(tmp_path):
    class Concurrent(PairwiseJudge):
        concurrency = 3

        def __init__(self):
            self.batches: list[int] = []

        def identity(self) -> str:
            return "concurrent"

        def judge(self, prompts, pairs):
            self.batches.append(len(pairs))
            return [FIRST if len(a) >= len(b) else SECOND for a, b in pairs]

    judge = Concurrent()
    both = BothOrders(judge, VerdictStore(tmp_path / "v.sqlite"))
    both.compare_many([(f"q{i}", "long answer", "short") for i in range(15)])  # 30 ordered calls
    assert judge.batches == [12, 12, 6]  # stored every 12 calls, not once at the end
    assert BothOrders(judge, batch_size=5).batch_size == 5
