"""P4's ranking claims (Chen et al. 2024, *Towards Improved Preference Optimization Pipeline: from Data
Generation to Budget-Controlled Regularization*; docs/methods.md §5), measured on the OpenAssistant trees.

Every ranked group of assistant replies in ``oasst-en-100-tree.jsonl`` (a user turn with at least two
ranked replies) is one prompt; the replies' human ranks (0 = best, no ties in this file) are the ground
truth. For each prompt we rank the replies

- by **iterative pairwise ranking** (:func:`preftune.judging.ranking.ipr_rank`) and by a **round robin**
  (:func:`preftune.judging.ranking.round_robin_rank`) with each offline judge (``longer``, ``shorter``, and a
  seeded ``random`` judge as a control), every comparison asked in both orders
  (:class:`preftune.judging.BothOrders`, no verdict cache, so every ordered call is counted);
- by **scoring each reply alone** (:func:`preftune.judging.ranking.score_rank`) with the gold reward model
  (:mod:`preftune.reproduce.gold`: trained on HH-RLHF, never on these trees).

Measured per prompt: ordered judge calls, Kendall τ (tau-a) with the human order, and whether the top reply
agrees. (a) IPR needs fewer calls than round robin: :func:`preftune.reproduce.rules.calls_checks` per judge;
(b) IPR ranks closer to the human order than scoring: :func:`preftune.reproduce.rules.ranking_checks`, one
check per real judge (the random control is shown, never checked).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.data.examples import Origin, PreferenceExample
from preftune.data.ranked import parse_tree, read_tree
from preftune.judging import BothOrders, FunctionJudge, PairwiseJudge, RandomJudge
from preftune.judging.functions import longer_is_better, shorter_is_better
from preftune.judging.ranking import (
    comparisons_bound,
    ipr_rank,
    kendall_tau,
    round_robin_rank,
    score_rank,
    top1_agreement,
)

DEFAULT_TREES = Path("/work/shared/data/oasst-en-100-tree.jsonl")
CHECKED_JUDGES = ("longer", "shorter")
CONTROL = "random"
SCORE = "score"
Scorer = Callable[[list[Any], list[str]], list[float]]


@dataclass(frozen=True)
class Group:
    """One prompt: the conversation down to a user turn, its ranked replies, and their human order (best first)."""

    prompt: list[dict[str, str]]
    replies: list[str]
    truth: tuple[int, ...]

    @property
    def prompt_text(self) -> str:
        """The conversation as one string, for the function judges (they ignore it)."""
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)


def read_groups(path: Path, trees: int | None = None, turns: str = "all", seed: int | None = 0) -> list[Group]:
    """The ranked groups of the first ``trees`` trees (None: all), keeping only replies that carry a rank.

    The replies are shuffled per group (seeded by ``seed``, the tree and the group; None keeps the file's order):
    the file lists them in an order that follows their rank, and IPR's insertion and the score ranking keep the
    input order among candidates they cannot separate, so an unshuffled order would leak the truth [our choice].
    """
    groups: list[Group] = []
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if trees is not None and index >= trees:
                break
            for number, ranked in enumerate(read_tree(json.loads(line), tree_turns=turns)):
                kept = [(v, c) for v, c in zip(ranked.values, ranked.completions, strict=True) if v is not None]
                if len(kept) < 2:
                    continue
                if seed is not None:
                    random.Random(f"{seed}:{index}:{number}").shuffle(kept)
                replies = [c[0]["content"] if isinstance(c, list) else str(c) for _, c in kept]
                truth = tuple(sorted(range(len(kept)), key=lambda i: (kept[i][0], i)))
                groups.append(Group(list(ranked.prompt), replies, truth))  # type: ignore[arg-type]
    return groups


def tree_pairs(path: Path, trees: int | None = None) -> list[PreferenceExample]:
    """Every pair of the trees read: the prompts the gold evaluator must not have trained on."""
    examples: list[PreferenceExample] = []
    with path.open(encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            if trees is not None and index >= trees:
                break
            examples += parse_tree(json.loads(line), Origin(str(path), index + 1), pairing="all")
    return examples


def judges(seed: int = 0) -> dict[str, PairwiseJudge]:
    """The offline judges: ``longer``, ``shorter`` and the ``random`` control."""
    return {
        "longer": FunctionJudge(longer_is_better, name="longer"),
        "shorter": FunctionJudge(shorter_is_better, name="shorter"),
        CONTROL: RandomJudge(seed),
    }


@dataclass
class RankerRecord:
    """Per prompt, in the groups' order: τ with the human order, top-1 agreement, ordered judge calls."""

    taus: list[float] = field(default_factory=list)
    top1: list[bool] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)

    def add(self, order: Sequence[int], truth: Sequence[int], calls: int) -> None:
        self.taus.append(kendall_tau(order, truth))
        self.top1.append(top1_agreement(order, truth))
        self.calls.append(calls)

    def to_json(self) -> dict[str, list]:
        return {"tau": self.taus, "top1": self.top1, "calls": self.calls}


@dataclass
class RankingStudy:
    """Every ranker's records (``ipr:<judge>``, ``round_robin:<judge>``, ``score``) and the groups' sizes."""

    sizes: list[int]
    records: dict[str, RankerRecord]
    judges: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes,
            "judges": list(self.judges),
            "rankers": {k: r.to_json() for k, r in self.records.items()},
        }


def _judged(group: Group, judge: PairwiseJudge, method: Callable) -> tuple[tuple[int, ...], int]:
    """The order ``method`` (ipr_rank or round_robin_rank) gives with ``judge``, and its ordered calls."""
    both = BothOrders(judge)
    text = group.prompt_text
    ranking = method(len(group.replies), lambda i, j: both.compare(text, group.replies[i], group.replies[j]))
    return ranking.order, both.calls


def run_ranking_study(groups: Sequence[Group], scorer: Scorer, seed: int = 0) -> RankingStudy:
    """Rank every group with IPR and round robin per judge, and by the scorer's rewards; compare with the truth."""
    named = judges(seed)
    records: dict[str, RankerRecord] = {}
    for name, judge in named.items():
        for method, rank in (("ipr", ipr_rank), ("round_robin", round_robin_rank)):
            record = records.setdefault(f"{method}:{name}", RankerRecord())
            for group in groups:
                order, calls = _judged(group, judge, rank)
                record.add(order, group.truth, calls)
    prompts = [g.prompt for g in groups for _ in g.replies]
    rewards = scorer(prompts, [r for g in groups for r in g.replies])
    record = records.setdefault(SCORE, RankerRecord())
    start = 0
    for group in groups:
        values = rewards[start : start + len(group.replies)]
        start += len(group.replies)
        record.add(score_rank(values).order, group.truth, 0)
    return RankingStudy([len(g.replies) for g in groups], records, tuple(named))


def calls_by_size(study: RankingStudy) -> dict[int, dict[str, float]]:
    """Per group size N: the mean ordered calls of IPR per judge, round robin's, and IPR's bound (2 per comparison)."""
    table: dict[int, dict[str, float]] = {}
    for n in sorted(set(study.sizes)):
        idx = [i for i, s in enumerate(study.sizes) if s == n]
        row = {"prompts": float(len(idx)), "bound": 2.0 * comparisons_bound(n), "round_robin": float(n * (n - 1))}
        for judge in study.judges:
            row[judge] = sum(study.records[f"ipr:{judge}"].calls[i] for i in idx) / len(idx)
        table[n] = row
    return table


def calls_per_judge(study: RankingStudy) -> dict[str, Mapping[str, list[float]]]:
    """``judge -> {"ipr": calls per prompt, "round_robin": calls per prompt}`` for the calls rule (the checked
    judges; the random control is shown, never checked)."""
    return {
        j: {
            "ipr": [float(c) for c in study.records[f"ipr:{j}"].calls],
            "round_robin": [float(c) for c in study.records[f"round_robin:{j}"].calls],
        }
        for j in study.judges
        if j in CHECKED_JUDGES
    }


def taus_for_rule(study: RankingStudy) -> dict[str, list[float]]:
    """``judge -> IPR τ per prompt`` for the checked judges, and ``score -> τ per prompt``."""
    taus = {j: study.records[f"ipr:{j}"].taus for j in CHECKED_JUDGES if j in study.judges}
    return {**taus, SCORE: study.records[SCORE].taus}
