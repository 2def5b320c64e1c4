"""Pairwise judging (P4, docs/methods.md §5): judges, the both-orders rule, and a verdict cache.

    >>> from preftune.judging import BothOrders, FunctionJudge, VerdictStore
    >>> judge = FunctionJudge("preftune.judging.functions:longer_is_better")
    >>> both = BothOrders(judge, VerdictStore("runs/x/verdicts.sqlite"))
    >>> both.compare("Q?", "a long answer", "short")
    <Verdict.A: 'a'>

Imports nothing of preftune beyond the leaves :mod:`preftune.errors` and :mod:`preftune.files`.
"""

from preftune.judging.base import FAILED, FIRST, SECOND, TIE, BothOrders, PairwiseJudge, Verdict, combine
from preftune.judging.functions import (
    FunctionJudge,
    RandomJudge,
    load_function,
    longer_is_better,
    shorter_is_better,
)
from preftune.judging.store import VerdictStore, text_hash

__all__ = [
    "FAILED",
    "FIRST",
    "SECOND",
    "TIE",
    "BothOrders",
    "FunctionJudge",
    "PairwiseJudge",
    "RandomJudge",
    "Verdict",
    "VerdictStore",
    "combine",
    "load_function",
    "longer_is_better",
    "shorter_is_better",
    "text_hash",
]
