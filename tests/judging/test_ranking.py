"""Iterative pairwise ranking and its reference rankings (P4, docs/methods.md §5)."""

from __future__ import annotations

import enum
import math
import random

import pytest

from preftune.judging.ranking import (
    Ranking,
    _outcome,
    comparisons_bound,
    ipr_rank,
    kendall_tau,
    pairs_from_ranking,
    round_robin_comparisons,
    round_robin_rank,
    score_rank,
    top1_agreement,
)


class _Verdict(enum.Enum):
    """Stands in for the judging package's Verdict: only the member names matter."""

    A = "a"
    B = "b"
    TIE = "tie"
    FAILED = "failed"


class Counting:
    """A comparator from hidden scores (higher is better) that counts its calls."""

    def __init__(self, scores, flip=0.0, rng=None):
        self.scores, self.flip, self.rng = scores, flip, rng
        self.calls: list[tuple[int, int]] = []

    def __call__(self, a: int, b: int) -> str:
        self.calls.append((a, b))
        verdict = "a" if self.scores[a] > self.scores[b] else "b" if self.scores[a] < self.scores[b] else "tie"
        if self.flip and verdict != "tie" and self.rng.random() < self.flip:
            verdict = "b" if verdict == "a" else "a"
        return verdict


class Cached:
    """A verdict cache in front of a judge; interrupts once ``limit`` new calls were made."""

    def __init__(self, judge: Counting):
        self.judge, self.cache, self.limit = judge, {}, None

    def __call__(self, a: int, b: int) -> str:
        if (a, b) not in self.cache:
            if self.limit is not None and len(self.judge.calls) >= self.limit:
                raise KeyboardInterrupt
            self.cache[(a, b)] = self.judge(a, b)
        return self.cache[(a, b)]


def truth(scores) -> tuple[int, ...]:
    return tuple(sorted(range(len(scores)), key=lambda k: (-scores[k], k)))


@pytest.mark.parametrize("rank", [ipr_rank, round_robin_rank])
def test_a_perfect_comparator_gives_the_sorted_order(rank) -> None:
    rng = random.Random(0)
    for n in range(0, 33):
        scores = [rng.random() for _ in range(n)]
        compare = Counting(scores)
        ranking = rank(n, compare)
        assert ranking.order == truth(scores) == score_rank(scores).order
        assert ranking.comparisons == len(compare.calls)
        assert ranking.failed == 0


def test_ipr_stays_within_its_bound_and_round_robin_makes_every_pair() -> None:
    rng = random.Random(1)
    for n in range(1, 33):
        assert comparisons_bound(n) <= n * math.ceil(math.log2(n)) if n > 1 else comparisons_bound(n) == 0
        assert comparisons_bound(n) == sum(math.ceil(math.log2(k + 1)) for k in range(1, n))
        for scores in ([rng.random() for _ in range(n)], list(range(n)), list(range(n, 0, -1))):
            compare = Counting(scores)
            ranking = ipr_rank(n, compare)
            assert ranking.comparisons == len(compare.calls) <= comparisons_bound(n)
            compare = Counting(scores)
            ranking = round_robin_rank(n, compare)
            assert ranking.comparisons == len(compare.calls) == round_robin_comparisons(n) == n * (n - 1) // 2
            assert sorted(compare.calls) == [(i, j) for i in range(n) for j in range(i + 1, n)]


def test_the_bound_is_reached_and_the_readme_values() -> None:
    # Always "better" halves each search down to the top slot: k.bit_length() comparisons, the bound exactly.
    for n in range(1, 33):
        ranking = ipr_rank(n, lambda a, b: "a")
        assert ranking.comparisons == comparisons_bound(n)
        assert ranking.order == tuple(range(n - 1, -1, -1))
    assert [comparisons_bound(n) for n in (4, 8, 16)] == [5, 17, 49]
    assert [round_robin_comparisons(n) for n in (4, 8, 16)] == [6, 28, 120]
    assert comparisons_bound(0) == comparisons_bound(1) == round_robin_comparisons(1) == 0
    with pytest.raises(ValueError):
        comparisons_bound(-1)


def test_a_comparator_that_always_ties_keeps_index_order() -> None:
    """TIE (and FAILED) means "not better": stable insertion, earlier candidates first."""
    for verdict in ("tie", _Verdict.TIE, "failed", _Verdict.FAILED):
        for rank in (ipr_rank, round_robin_rank):
            ranking = rank(7, lambda a, b, v=verdict: v)
            assert ranking.order == tuple(range(7))
            assert ranking.failed == (ranking.comparisons if _outcome(verdict) == "failed" else 0)


def test_enum_verdicts_plug_in_and_unknown_verdicts_are_refused() -> None:
    scores = [0.3, 0.9, 0.1, 0.5]
    as_enum = {"a": _Verdict.A, "b": _Verdict.B, "tie": _Verdict.TIE}

    def compare(a, b):
        return as_enum[Counting(scores)(a, b)]

    assert ipr_rank(4, compare).order == round_robin_rank(4, compare).order == (1, 3, 0, 2)
    assert [_outcome(v) for v in ("A", "b", "Tie", "FAILED")] == ["a", "b", "tie", "failed"]
    for bad in ("win", None, 1):
        with pytest.raises(ValueError):
            _outcome(bad)
    with pytest.raises(ValueError):
        ipr_rank(3, lambda a, b: "maybe")


def test_failed_comparisons_are_counted() -> None:
    scores = [0.2, 0.8, 0.5, 0.1, 0.9]
    perfect = Counting(scores)

    def compare(a, b):  # fails whenever candidate 0 or 3 takes part
        return "failed" if {a, b} & {0, 3} else perfect(a, b)

    for rank in (ipr_rank, round_robin_rank):
        seen = Counting(scores)
        ranking = rank(5, lambda a, b, seen=seen: seen(a, b) and compare(a, b))
        assert ranking.failed == sum(1 for a, b in seen.calls if {a, b} & {0, 3}) > 0
        assert ranking.comparisons == len(seen.calls)
    # Round robin scores: 0 and 3 get 0.5 from each of their 4 pairs (2.0); 4 beats 1 and 2 (2 + 1.0 = 3.0),
    # 1 beats 2 (1 + 1.0 = 2.0), 2: 0 + 1.0. So 4, then 0, 1, 3 tied at 2.0 by index, then 2.
    assert round_robin_rank(5, compare).order == (4, 0, 1, 3, 2)


def test_ipr_on_a_noisy_comparator_still_tracks_the_truth() -> None:
    """Measured: 20% of verdicts flipped at random, 50 prompts of 8 candidates."""
    rng = random.Random(2024)
    taus, tops = [], []
    for _ in range(50):
        scores = [rng.random() for _ in range(8)]
        ranking = ipr_rank(8, Counting(scores, flip=0.2, rng=rng))
        taus.append(kendall_tau(ranking.order, truth(scores)))
        tops.append(top1_agreement(ranking.order, truth(scores)))
    mean = sum(taus) / len(taus)
    print(f"noisy IPR (flip 20%, n=8, 50 prompts): mean Kendall tau {mean:.3f}, top-1 agreement {sum(tops) / 50:.2f}")
    assert mean > 0.5


def test_an_interrupted_ranking_resumes_with_no_call_repeated() -> None:
    scores = [random.Random(5).random() for _ in range(12)]
    full = ipr_rank(12, Counting(scores))
    for k in range(full.comparisons + 1):
        judge = Cached(Counting(scores))
        judge.limit = k
        try:
            first = ipr_rank(12, judge)
            assert k == full.comparisons and first == full
        except KeyboardInterrupt:
            assert len(judge.judge.calls) == k < full.comparisons
        made_first = len(judge.judge.calls)
        assert made_first == k
        judge.limit = None
        second = ipr_rank(12, judge)
        assert second == full
        assert len(judge.judge.calls) - made_first == full.comparisons - k  # only the calls the first run lacked
        assert len(set(judge.judge.calls)) == len(judge.judge.calls) == full.comparisons


def test_score_rank_is_the_stable_baseline() -> None:
    assert score_rank([0.5, 2.0, 0.5, -1.0]) == Ranking(order=(1, 0, 2, 3), comparisons=0, failed=0, method="score")
    assert score_rank([]).order == ()
    with pytest.raises(ValueError):
        score_rank([1.0, float("nan")])


def test_kendall_tau_and_top1_by_hand() -> None:
    assert kendall_tau([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert kendall_tau([0, 1, 2, 3], [3, 2, 1, 0]) == -1.0
    assert kendall_tau([0, 1, 2, 3], [0, 2, 1, 3]) == pytest.approx(2 / 3)  # one swap: (5 − 1) / 6
    assert kendall_tau([2, 0, 1], [0, 1, 2]) == pytest.approx(-1 / 3)  # (1 − 2) / 3
    assert kendall_tau([7], [7]) == kendall_tau([], []) == 1.0
    for a, b in (([0, 1, 2], [0, 1, 3]), ([0, 1], [0, 1, 2]), ([0, 0, 1], [0, 1, 1])):
        with pytest.raises(ValueError):
            kendall_tau(a, b)
    assert top1_agreement([3, 1, 2], [3, 2, 1]) is True
    assert top1_agreement([3, 1, 2], [1, 3, 2]) is False
    with pytest.raises(ValueError):
        top1_agreement([], [1])


def test_pairs_from_ranking_by_hand() -> None:
    assert pairs_from_ranking([2, 0, 3, 1]) == [(2, 1)]
    assert pairs_from_ranking((2, 0, 3, 1), "best_vs_worst") == [(2, 1)]
    assert pairs_from_ranking([2, 0, 3, 1], "all") == [(2, 0), (2, 3), (2, 1), (0, 3), (0, 1), (3, 1)]
    assert pairs_from_ranking([5], "best_vs_worst") == pairs_from_ranking([5], "all") == []
    assert pairs_from_ranking([], "all") == []
    with pytest.raises(ValueError):
        pairs_from_ranking([0, 1], "adjacent")
    with pytest.raises(ValueError):
        pairs_from_ranking([0, 1, 0], "all")


def test_negative_or_non_int_n_is_refused() -> None:
    for bad in (-1, 2.0, True):
        with pytest.raises(ValueError):
            ipr_rank(bad, lambda a, b: "a")
        with pytest.raises(ValueError):
            round_robin_rank(bad, lambda a, b: "a")
