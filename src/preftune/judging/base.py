"""Pairwise judges and the one wrapper that asks them in both orders (docs/methods.md §5).

A judge answers ordered calls: given a prompt and a pair ``(first, second)`` it says which
completion is better — :data:`FIRST`, :data:`SECOND` — or that they are as good as each other
(:data:`TIE`, for judges whose answer format has a tie: MT-Bench's ``[[C]]``, Arena-Hard's
``[[A=B]]``), or :data:`FAILED` (no verdict could be read). The model is TRL's former
``BasePairwiseJudge``: ``judge(prompts, pairs) -> list[int]``, −1 for a failed item.

Policy lives in :class:`BothOrders`, not in each judge: it asks ``(a, b)`` and ``(b, a)``, looks
each ordered call up in a :class:`~preftune.judging.store.VerdictStore` first and writes it there as
soon as it arrives, and turns the two answers into a :class:`Verdict`:

=====================  =====================  ==================
``judge(a, b)``        ``judge(b, a)``        verdict
=====================  =====================  ==================
FIRST (a)              SECOND (a)             ``Verdict.A``
SECOND (b)             FIRST (b)              ``Verdict.B``
FIRST                  FIRST                  ``Verdict.TIE`` (position bias)
SECOND                 SECOND                 ``Verdict.TIE`` (position bias)
TIE (either)           not FAILED             ``Verdict.TIE`` (the judge said so)
FAILED (either)                               ``Verdict.FAILED``
=====================  =====================  ==================

A tie is a verdict: stored, never asked again, counted half by win rates. A failed call is never
stored, so a rerun asks it again. ``a == b`` is a tie without a call.
"""

from __future__ import annotations

import enum
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol


class VerdictCache(Protocol):
    """Where ordered verdicts are kept between calls (:class:`~preftune.judging.store.VerdictStore`)."""

    def get(self, identity: str, prompt: str, first: str, second: str) -> int | None: ...

    def put(self, identity: str, prompt: str, first: str, second: str, verdict: int) -> None: ...


# Raw answers of one ordered call.
FIRST = 0
SECOND = 1
TIE = 2
FAILED = -1
ANSWERED = (FIRST, SECOND, TIE)  # the raw answers that are verdicts (stored; never asked again)


class Verdict(enum.Enum):
    """The outcome of an unordered comparison of ``(a, b)``, after asking both orders."""

    A = "a"
    B = "b"
    TIE = "tie"
    FAILED = "failed"


class PairwiseJudge(ABC):
    """Says which completion of an ordered pair is better, one answer per item.

    ``concurrency``: how many ordered calls the judge serves at once from different threads (an
    API judge's request limit); a ranking works on that many prompts at a time. 1: one at a time.
    """

    concurrency: int = 1

    @abstractmethod
    def identity(self) -> str:
        """A stable string naming the judge and every setting that changes its answers.

        It keys the verdict cache, so two judges with the same identity must answer alike.
        Never put a secret (an API key) in it: it is stored in plain text.
        """

    @abstractmethod
    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        """:data:`FIRST`, :data:`SECOND`, :data:`TIE` or :data:`FAILED` for each ``(prompt, (first, second))``.

        Must not raise because one item failed: return :data:`FAILED` for that item.
        """


def _normalise(answer: object) -> int:
    """An answer as FIRST/SECOND/TIE, anything else (exceptions' −1, junk) as FAILED."""
    try:
        return int(answer) if answer in ANSWERED else FAILED  # type: ignore[call-overload]
    except (TypeError, ValueError):  # e.g. an array, whose truth is ambiguous
        return FAILED


def combine(forward: int, backward: int) -> Verdict:
    """The tie rule: ``forward`` answers ``(a, b)``, ``backward`` answers ``(b, a)``."""
    if forward == FAILED or backward == FAILED:
        return Verdict.FAILED  # even beside a tie: the failed order is asked again, the tie is stored
    if forward == TIE or backward == TIE:
        return Verdict.TIE
    if forward == FIRST and backward == SECOND:
        return Verdict.A
    if forward == SECOND and backward == FIRST:
        return Verdict.B
    return Verdict.TIE


class BothOrders:
    """Asks a judge both orders of each comparison, through an optional verdict store.

    ``calls`` counts the ordered calls that reached the judge, ``store_answers`` those the store
    answered instead.
    ``batch_size`` bounds how many ordered calls go to the judge in one ``judge.judge`` list; each
    batch's answers are stored as soon as it returns. Default: all at once for a judge that serves
    one call at a time (a local model batches them itself), ``4 × concurrency`` for one that serves
    several (an API judge), so that its verdicts reach the store as they come, not at the end.
    """

    def __init__(self, judge: PairwiseJudge, store: VerdictCache | None = None, batch_size: int | None = None):
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.judge = judge
        self.store = store
        if batch_size is None and judge.concurrency > 1:
            batch_size = 4 * judge.concurrency
        self.batch_size = batch_size
        self.identity = judge.identity()
        self.calls = 0
        self.store_answers = 0
        self._lock = threading.Lock()  # compare_many may run in several threads (a ranking's prompts)

    def compare(self, prompt: str, a: str, b: str) -> Verdict:
        """The verdict on ``a`` against ``b`` for ``prompt``."""
        return self.compare_many([(prompt, a, b)])[0]

    def compare_many(self, items: Sequence[tuple[str, str, str]]) -> list[Verdict]:
        """Verdicts for ``(prompt, a, b)`` items; the ordered calls missing from the store go in one list."""
        answers: dict[tuple[str, str, str], int] = {}
        missing: list[tuple[str, str, str]] = []
        for prompt, a, b in items:
            if a == b:
                continue
            for call in ((prompt, a, b), (prompt, b, a)):
                if call in answers:
                    continue
                cached = self.store.get(self.identity, *call) if self.store is not None else None
                if cached is None:
                    answers[call] = FAILED  # placeholder until asked
                    missing.append(call)
                else:
                    answers[call] = cached
                    with self._lock:
                        self.store_answers += 1
        step = self.batch_size or max(len(missing), 1)
        for start in range(0, len(missing), step):
            batch = missing[start : start + step]
            raw = self.judge.judge([p for p, _, _ in batch], [(f, s) for _, f, s in batch])
            if len(raw) != len(batch):
                raise RuntimeError(
                    f"judge {self.identity!r} returned {len(raw)} answers for {len(batch)} ordered pairs"
                )
            with self._lock:
                self.calls += len(batch)
            for call, answer in zip(batch, raw, strict=True):
                value = _normalise(answer)
                answers[call] = value
                if value in ANSWERED and self.store is not None:
                    self.store.put(self.identity, *call, value)
        return [
            Verdict.TIE if a == b else combine(answers[(prompt, a, b)], answers[(prompt, b, a)])
            for prompt, a, b in items
        ]
