"""How often a pairwise judge agrees with people, beside the longer-is-better baseline (P4).

Each labelled pair (``prompt``, ``chosen`` = the response people preferred, ``rejected``) is
shown to the judge as ``(a, b)`` in a seeded random order per pair, so that ``a`` is not always
the human choice, and asked in both orders through :class:`~preftune.judging.base.BothOrders`.
Per pair the score is 1 when the verdict picks the human choice, 0 when it picks the other,
½ for a tie; a failed comparison is left out and counted. Reported:

- ``agreement``: the mean score over the pairs not failed, with its standard error s/√n
  (sample standard deviation, as :func:`preftune.evaluation.statistical.mean_and_stderr`);
- ``tie_rate``: the fraction of those pairs whose two ordered answers disagree (a tie verdict:
  position bias, or a judge that cannot tell);
- ``first_rate``: the fraction of the raw ordered answers naming a position that name the first
  (a judge that always answers "the first" has 1.0, an unbiased one about 0.5; a tie the judge
  declares names no position and is left out);
- the same for the ``longer`` judge on the same pairs in the same orders, because a judge's
  agreement means little without the longer-is-better baseline beside it.

Pairs whose human label was a tie never reach here (the loader drops and counts them); pass that
count as ``human_ties`` to have it in the report.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from preftune.errors import PreftuneError
from preftune.judging.base import FIRST, SECOND, BothOrders, PairwiseJudge, Verdict, _normalise
from preftune.judging.functions import FunctionJudge, longer_is_better
from preftune.judging.progress import compare_with_progress

if TYPE_CHECKING:
    from preftune.judging.store import VerdictStore

BASELINE = "longer"


class LabelledPair(Protocol):
    """Anything with ``prompt``, ``chosen`` (preferred by people) and ``rejected``, e.g. a PreferenceExample."""

    prompt: Any
    chosen: Any
    rejected: Any


@dataclass(frozen=True)
class JudgeScore:
    """One judge's agreement with people over a set of pairs.

    Attributes:
        judge: the judge's name (its spec or identity).
        agreement: mean score (1 human choice, ½ tie, 0 the other) over the pairs not failed.
        stderr: standard error of that mean (NaN with fewer than two pairs).
        scored: pairs not failed (the n of the mean).
        failed: pairs whose comparison failed (either ordered call), left out of every rate.
        human: pairs whose verdict picked the human choice.
        other: pairs whose verdict picked the other response.
        ties: pairs with a tie verdict (the two ordered answers disagree).
        tie_rate: ``ties / scored``.
        first_rate: raw ordered answers that are FIRST, over those of the scored pairs that name a position.
        calls: ordered calls that reached the judge (verdict-store hits do not count).
    """

    judge: str
    agreement: float
    stderr: float
    scored: int
    failed: int
    human: int
    other: int
    ties: int
    tie_rate: float
    first_rate: float
    calls: int

    def to_dict(self) -> dict[str, Any]:
        return {
            key: (None if isinstance(value, float) and math.isnan(value) else value)
            for key, value in asdict(self).items()
        }


@dataclass(frozen=True)
class AgreementReport:
    """A judge's agreement with people and the longer-is-better baseline's on the same pairs.

    Attributes:
        judge: the judge's score.
        baseline: the ``longer`` judge's score, same pairs, same orders.
        pairs: labelled pairs compared (human ties excluded).
        human_ties: pairs dropped because people tied (from the loader's summary), or None if unknown.
        seed: the seed of the per-pair presentation order.
        human_first: pairs shown with the human choice as ``a``.
    """

    judge: JudgeScore
    baseline: JudgeScore
    pairs: int
    human_ties: int | None
    seed: int
    human_first: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "judge": self.judge.to_dict(),
            "baseline": self.baseline.to_dict(),
            "pairs": self.pairs,
            "human_ties_dropped": self.human_ties,
            "seed": self.seed,
            "human_shown_first": self.human_first,
        }

    def table(self) -> str:
        """A small plain-text table: the judge's row and the baseline's."""
        header = ("judge", "agreement ± s.e.", "ties (position bias)", "first position", "failed", "n")
        rows = [header, *(_row(score) for score in (self.judge, self.baseline))]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def _row(score: JudgeScore) -> tuple[str, ...]:
    return (
        score.judge,
        f"{_fmt(score.agreement)} ± {_fmt(score.stderr)}",
        _fmt(score.tie_rate),
        _fmt(score.first_rate),
        str(score.failed),
        str(score.scored),
    )


def mean_stderr(values: Sequence[float]) -> tuple[float, float]:
    """Mean and its standard error s/√n (sample standard deviation); NaN where undefined.

    The same numbers as :func:`preftune.evaluation.statistical.mean_and_stderr`, without torch
    (judging may not import evaluation).
    """
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(variance / n)


class _Recording(PairwiseJudge):
    """Passes calls to ``inner`` under its identity and keeps every raw answer by ordered call."""

    def __init__(self, inner: PairwiseJudge):
        self.inner = inner
        self.concurrency = inner.concurrency
        self.answers: dict[tuple[str, str, str], int] = {}

    def identity(self) -> str:
        return self.inner.identity()

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        raw = self.inner.judge(prompts, pairs)
        if len(raw) == len(pairs):  # otherwise BothOrders raises
            for prompt, (first, second), answer in zip(prompts, pairs, raw, strict=True):
                self.answers[(prompt, first, second)] = _normalise(answer)
        return raw


def presentation_order(n: int, seed: int) -> list[bool]:
    """For each of ``n`` pairs, whether the human choice is shown as ``a`` — seeded, prefix-stable."""
    rng = random.Random(seed)
    return [rng.random() < 0.5 for _ in range(n)]


def _text_triples(examples: Sequence[LabelledPair | tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    triples = []
    for index, example in enumerate(examples):
        if isinstance(example, tuple):
            triple = example
        else:
            triple = (example.prompt, example.chosen, example.rejected)
        if not all(isinstance(part, str) for part in triple):
            where = getattr(example, "origin", None) or f"pair {index}"
            raise PreftuneError(
                f"{where}: judges compare text; conversational pairs (lists of messages) are not supported here"
            )
        triples.append(triple)
    return triples


def score_judge(
    judge: PairwiseJudge,
    triples: Sequence[tuple[str, str, str]],
    human_first: Sequence[bool],
    *,
    name: str | None = None,
    store: VerdictStore | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> JudgeScore:
    """One judge's :class:`JudgeScore` on ``(prompt, chosen, rejected)`` triples shown as ``human_first`` says.

    ``progress``: a bar with ETA over the comparisons on stderr (:mod:`preftune.judging.progress`).
    """
    recording = _Recording(judge)
    both = BothOrders(recording, store=store, batch_size=batch_size)
    items = [(p, c, r) if first else (p, r, c) for (p, c, r), first in zip(triples, human_first, strict=True)]
    verdicts = compare_with_progress(both, items, enabled=progress, description="judge eval")
    scores: list[float] = []
    human = other = ties = failed = firsts = raw_count = 0
    for (prompt, a, b), first, verdict in zip(items, human_first, verdicts, strict=True):
        if verdict is Verdict.FAILED:
            failed += 1
            continue
        if verdict is Verdict.TIE:
            ties += 1
            scores.append(0.5)
        elif (verdict is Verdict.A) == first:
            human += 1
            scores.append(1.0)
        else:
            other += 1
            scores.append(0.0)
        if a == b:
            continue  # a tie without a call: no raw answers
        for call in ((prompt, a, b), (prompt, b, a)):
            answer = recording.answers.get(call)
            if answer is None and store is not None:
                answer = store.get(both.identity, *call)
            if answer in (FIRST, SECOND):  # a position is chosen: not failed, not a tie the judge declared
                raw_count += 1
                firsts += answer == FIRST
    mean, stderr = mean_stderr(scores)
    scored = len(scores)
    return JudgeScore(
        judge=name or both.identity,
        agreement=mean,
        stderr=stderr,
        scored=scored,
        failed=failed,
        human=human,
        other=other,
        ties=ties,
        tie_rate=ties / scored if scored else math.nan,
        first_rate=firsts / raw_count if raw_count else math.nan,
        calls=both.calls,
    )


def judge_agreement(
    judge: PairwiseJudge,
    examples: Sequence[LabelledPair | tuple[str, str, str]],
    store: VerdictStore | None = None,
    *,
    seed: int = 0,
    name: str | None = None,
    batch_size: int | None = None,
    human_ties: int | None = None,
    progress: bool = False,
) -> AgreementReport:
    """The judge's agreement with the human labels of ``examples``, and the ``longer`` baseline's.

    Args:
        judge: the judge to measure.
        examples: labelled pairs, ``chosen`` being the response people preferred (PreferenceExamples
            from :func:`preftune.data.load_preference_data`, or ``(prompt, chosen, rejected)`` tuples).
        store: a verdict store for the judge's ordered calls (the baseline never uses it).
        seed: seeds the per-pair presentation order (the same for the judge and the baseline).
        name: the judge's name in the report (default: its identity).
        batch_size: ordered calls per ``judge.judge`` list (default: all at once).
        human_ties: pairs people tied, which the loader dropped; only reported.
        progress: a bar with ETA over the judge's comparisons (stderr); the baseline needs none.
    """
    triples = _text_triples(examples)
    if not triples:
        raise PreftuneError("no labelled pairs to judge")
    order = presentation_order(len(triples), seed)
    score = score_judge(judge, triples, order, name=name, store=store, batch_size=batch_size, progress=progress)
    baseline = score_judge(FunctionJudge(longer_is_better), triples, order, name=f"{BASELINE} (baseline)")
    return AgreementReport(score, baseline, len(triples), human_ties, seed, sum(order))
