"""Rank the candidates of one prompt from pairwise verdicts (P4, docs/methods.md §5).

A pairwise judge, asked in both orders, gives a verdict on two candidates ``a`` and ``b``:
``a`` better, ``b`` better, a tie, or a failure. Iterative pairwise ranking (IPR) sorts the N
candidates of a prompt by binary insertion with that verdict as comparator: at most
``comparisons_bound(N)`` = Σ_{k=1}^{N-1} ⌈log2(k+1)⌉ ≤ N·⌈log2 N⌉ comparisons, against
N(N−1)/2 for a round robin. The baseline it replaces scores each candidate alone
(``score_rank``). The training pairs are taken from the ranking (``pairs_from_ranking``).

This module knows nothing of judges or caches: a comparator is any callable
``compare(a, b)`` of two candidate indices returning ``"a"``, ``"b"``, ``"tie"`` or ``"failed"``,
or any object whose ``.name`` is ``A``, ``B``, ``TIE`` or ``FAILED`` (an enum such as the
judging package's ``Verdict``). Since every ranking here is deterministic given its
comparator, a comparator backed by a verdict cache makes an interrupted ranking resume with
no call repeated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Ranking",
    "comparisons_bound",
    "ipr_rank",
    "kendall_tau",
    "pairs_from_ranking",
    "round_robin_comparisons",
    "round_robin_rank",
    "score_rank",
    "top1_agreement",
]

Comparator = Callable[[int, int], Any]

_OUTCOMES = ("a", "b", "tie", "failed")
PAIRINGS = ("best_vs_worst", "all")


@dataclass(frozen=True)
class Ranking:
    """A full ranking of one prompt's candidates.

    ``order``: candidate indices, best first. ``comparisons``: comparator calls made.
    ``failed``: those whose verdict was FAILED. ``method``: ``ipr``, ``round_robin`` or ``score``.
    """

    order: tuple[int, ...]
    comparisons: int
    failed: int
    method: str


def _outcome(verdict: Any) -> str:
    """Normalise a verdict to ``"a"``, ``"b"``, ``"tie"`` or ``"failed"``.

    Accepts those strings (any case) or an object whose ``.name`` is A, B, TIE or FAILED.
    """
    name = verdict if isinstance(verdict, str) else getattr(verdict, "name", None)
    if isinstance(name, str) and name.lower() in _OUTCOMES:
        return name.lower()
    raise ValueError(f"not a verdict: {verdict!r} (expected one of {_OUTCOMES} or an enum A/B/TIE/FAILED)")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of candidates must be an int >= 0, got {n!r}")


def comparisons_bound(n: int) -> int:
    """Most comparisons ``ipr_rank`` makes for ``n`` candidates: Σ_{k=1}^{n-1} ⌈log2(k+1)⌉.

    Inserting into a sorted list of k items searches k+1 slots, ⌈log2(k+1)⌉ = ``k.bit_length()``
    comparisons at most (P4, docs/methods.md §5). It is ≤ n·⌈log2 n⌉.
    """
    _check_n(n)
    return sum(k.bit_length() for k in range(1, n))


def round_robin_comparisons(n: int) -> int:
    """Comparisons of a round robin over ``n`` candidates: every unordered pair once, n(n−1)/2."""
    _check_n(n)
    return n * (n - 1) // 2


def ipr_rank(n: int, compare: Comparator) -> Ranking:
    """Iterative pairwise ranking by binary insertion (P4, docs/methods.md §5).

    Candidates 0..n-1 are inserted one at a time into the sorted list (best first) by binary
    search, calling ``compare(candidate, pivot)``; ``"a"`` means the candidate is better than
    the pivot and goes above it. A ``"b"``, a TIE or a FAILED verdict counts as "not better":
    the candidate goes below the pivot. So the insertion is stable: among candidates the judge
    cannot separate, the earlier index comes first (a comparator that always ties gives
    0, 1, ..., n-1). The calls are deterministic given the verdicts, and at most
    ``comparisons_bound(n)``.
    """
    _check_n(n)
    order: list[int] = []
    comparisons = failed = 0
    for candidate in range(n):
        lo, hi = 0, len(order)
        while lo < hi:
            mid = (lo + hi) // 2
            outcome = _outcome(compare(candidate, order[mid]))
            comparisons += 1
            failed += outcome == "failed"
            if outcome == "a":
                hi = mid
            else:
                lo = mid + 1
        order.insert(lo, candidate)
    return Ranking(order=tuple(order), comparisons=comparisons, failed=failed, method="ipr")


def round_robin_rank(n: int, compare: Comparator) -> Ranking:
    """Round robin: ``compare(i, j)`` once for every pair i < j, n(n−1)/2 calls (P4's reference).

    A win scores 1, a tie 0.5 to each; a FAILED comparison also scores 0.5 to each, as a tie
    (it tells nothing about the pair). Order: score descending, then index ascending.
    """
    _check_n(n)
    score = [0.0] * n
    comparisons = failed = 0
    for i in range(n):
        for j in range(i + 1, n):
            outcome = _outcome(compare(i, j))
            comparisons += 1
            failed += outcome == "failed"
            if outcome == "a":
                score[i] += 1.0
            elif outcome == "b":
                score[j] += 1.0
            else:
                score[i] += 0.5
                score[j] += 0.5
    order = sorted(range(n), key=lambda k: (-score[k], k))
    return Ranking(order=tuple(order), comparisons=comparisons, failed=failed, method="round_robin")


def score_rank(scores: Sequence[float]) -> Ranking:
    """P4's baseline: each candidate scored alone (higher is better), no comparison.

    Order: score descending, then index ascending. Refuses a non-finite score.
    """
    values = [float(s) for s in scores]
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite scores at candidates {bad}")
    order = sorted(range(len(values)), key=lambda k: (-values[k], k))
    return Ranking(order=tuple(order), comparisons=0, failed=0, method="score")


def _check_same_items(order_a: Sequence[int], order_b: Sequence[int]) -> None:
    for name, order in (("order_a", order_a), ("order_b", order_b)):
        if len(set(order)) != len(order):
            raise ValueError(f"{name} repeats an item: {list(order)}")
    if set(order_a) != set(order_b):
        raise ValueError(f"the orders rank different items: {sorted(order_a)} vs {sorted(order_b)}")


def kendall_tau(order_a: Sequence[int], order_b: Sequence[int]) -> float:
    """Kendall's tau-a between two full orders of the same items: 1 identical, −1 reversed.

    (concordant − discordant) / (n(n−1)/2). Fewer than two items: 1.0 (nothing disagrees).
    Refuses orders that repeat an item or rank different items (ValueError).
    """
    _check_same_items(order_a, order_b)
    n = len(order_a)
    if n < 2:
        return 1.0
    pos_b = {item: k for k, item in enumerate(order_b)}
    ranks = [pos_b[item] for item in order_a]
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            score += 1 if ranks[i] < ranks[j] else -1
    return score / (n * (n - 1) / 2)


def top1_agreement(order_a: Sequence[int], order_b: Sequence[int]) -> bool:
    """Whether two orders put the same item first. Refuses an empty order (ValueError)."""
    if not order_a or not order_b:
        raise ValueError("top1_agreement needs two non-empty orders")
    return order_a[0] == order_b[0]


def pairs_from_ranking(order: Sequence[int], pairing: str = "best_vs_worst") -> list[tuple[int, int]]:
    """The (better, worse) training pairs a ranking yields (P4, docs/methods.md §5).

    ``"best_vs_worst"`` (default): ``[(order[0], order[-1])]``, none for fewer than two items.
    ``"all"``: every ordered pair ``(order[i], order[j])`` with i < j, n(n−1)/2 of them.
    """
    if pairing not in PAIRINGS:
        raise ValueError(f"unknown pairing {pairing!r}; expected one of {PAIRINGS}")
    if len(set(order)) != len(order):
        raise ValueError(f"the order repeats an item: {list(order)}")
    if len(order) < 2:
        return []
    if pairing == "best_vs_worst":
        return [(order[0], order[-1])]
    return [(order[i], order[j]) for i in range(len(order)) for j in range(i + 1, len(order))]
