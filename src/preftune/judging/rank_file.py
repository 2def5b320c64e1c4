"""``preftune rank``: prompts with N completions -> full rankings and preference pairs (P4, docs/methods.md §5).

Every row holds a ``prompt`` (a string, or messages ending with a user turn) and ``completions``
(N ≥ 2 strings, or assistant messages). All rows are validated before the first judge call. Each
prompt's completions are ranked by iterative pairwise ranking (binary insertion, the judge asked in
both orders, disagreements a tie) or by round robin; every verdict goes to the SQLite store as it
arrives, so a killed ranking resumes with no call repeated.

Two outputs, both read by ``preftune train`` as they are: the rankings as ranked rows (``prompt``,
``completions``, ``ranks`` with 0 the best: group objectives train on them), and pairs
(``prompt``, ``chosen``, ``rejected``: best vs worst, or every ordered pair). A prompt with a failed
comparison (no verdict: asked again on a rerun) keeps its provisional ranking but gives no pairs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.data.examples import Origin
from preftune.data.sources import load_rows
from preftune.data.validation import is_message_list
from preftune.errors import PreftuneError
from preftune.files import write_atomic
from preftune.judging.base import BothOrders, PairwiseJudge, Verdict
from preftune.judging.ranking import (
    Ranking,
    ipr_rank,
    kendall_tau,
    pairs_from_ranking,
    round_robin_rank,
    score_rank,
    top1_agreement,
)
from preftune.judging.store import VerdictStore

METHODS = {"ipr": ipr_rank, "round_robin": round_robin_rank}


@dataclass(frozen=True)
class Candidates:
    """One row: the prompt and its completions as given, and as the judge reads them (text)."""

    prompt: Any
    completions: list[Any]
    origin: Origin

    @property
    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in self.prompt)

    def completion_text(self, k: int) -> str:
        completion = self.completions[k]
        return completion if isinstance(completion, str) else "\n\n".join(m["content"] for m in completion)


@dataclass
class RankReport:
    """What a ranking did: prompts, judge calls (ordered, reaching the judge), comparisons, failures."""

    prompts: int = 0
    judge_calls: int = 0
    store_answers: int = 0  # ordered calls the verdict store answered (an earlier run's)
    comparisons: int = 0
    checks: int = 0  # best-against-worst comparisons the ranking had not made
    failed: int = 0
    pairs: int = 0
    rankings: list[Ranking] = field(default_factory=list)
    decided: list[bool] = field(default_factory=list)  # whether each prompt's best beats its worst outright
    incomplete: list[bool] = field(default_factory=list)  # whether a comparison of each prompt failed

    def __str__(self) -> str:
        per = self.judge_calls / max(self.prompts, 1)
        undecided = sum(d is False and not i for d, i in zip(self.decided, self.incomplete, strict=False))
        checks = f" and {self.checks} of best against worst" if self.checks else ""
        stored = f", {self.store_answers} answered by the verdict store" if self.store_answers else ""
        return (
            f"{self.prompts} prompts ranked: {self.comparisons} comparisons{checks}, {self.judge_calls} ordered "
            f"judge calls made ({per:.1f} per prompt){stored}, {self.failed} failed, {self.pairs} pairs; "
            f"{undecided} prompts whose best and worst the judge could not tell apart"
        )

    def failures(self, store: Path | str | None = None) -> str | None:
        """One line on the failed comparisons and what a rerun does, or None when none failed."""
        if not self.failed:
            return None
        where = f"the verdict store {store}" if store is not None else "the verdict store"
        return (
            f"{self.failed} of {self.comparisons} comparisons failed (no verdict) in {sum(self.incomplete)} of "
            f"{self.prompts} prompts, which give no pairs; rerun the same command: {where} answers the rest, "
            "so only calls without a verdict are asked"
        )


_FLIPPED = {Verdict.A: Verdict.B, Verdict.B: Verdict.A}


def read_candidates(source: str | Path) -> list[Candidates]:
    """Every row validated up front: a bad row is named by file and row, before any judge call."""
    raw = load_rows(source)
    out = []
    for index, row in enumerate(raw.rows):
        origin = raw.origin(index)
        prompt, completions = row.get("prompt"), row.get("completions")
        if not (isinstance(prompt, str) and prompt.strip()) and not is_message_list(prompt):
            raise PreftuneError(f"{origin}: 'prompt' must be a non-empty string or a list of messages")
        if not isinstance(completions, list) or len(completions) < 2:
            raise PreftuneError(f"{origin}: 'completions' must be a list of at least 2 completions")
        for k, completion in enumerate(completions):
            if not (isinstance(completion, str) and completion.strip()) and not is_message_list(completion):
                raise PreftuneError(f"{origin}: completions[{k}] must be a non-empty string or a list of messages")
        out.append(Candidates(prompt, completions, origin))
    if not out:
        raise PreftuneError(f"{raw.name}: no rows to rank")
    return out


def rank_rows(
    rows: Sequence[Candidates],
    judge: PairwiseJudge,
    *,
    method: str = "ipr",
    store: VerdictStore | None = None,
    progress: Any = None,
) -> RankReport:
    """Rank every row's completions with ``judge`` (both orders, through ``store``).

    Prompts are ranked ``judge.concurrency`` at a time (each prompt's comparisons in sequence: IPR
    chooses the next from the last); the report keeps the rows' order.
    """
    if method not in METHODS:
        raise PreftuneError(f"unknown ranking method '{method}' (expected one of {', '.join(METHODS)})")
    # one ordered call at a time per prompt, each verdict stored as it comes back: a kill loses only
    # the calls in flight
    both = BothOrders(judge, store, batch_size=1)

    def rank_one(row: Candidates) -> tuple[Ranking, bool, int, int]:
        prompt = row.prompt_text
        made: dict[tuple[int, int], Verdict] = {}  # this prompt's verdicts, so the check below asks nothing twice

        def compare(i: int, j: int) -> Verdict:
            if (j, i) in made:
                return _FLIPPED.get(made[(j, i)], made[(j, i)])
            if (i, j) not in made:
                made[(i, j)] = both.compare(prompt, row.completion_text(i), row.completion_text(j))
            return made[(i, j)]

        ranking = METHODS[method](len(row.completions), compare)
        best, worst = ranking.order[0], ranking.order[-1]
        extra = int(best != worst and (best, worst) not in made and (worst, best) not in made)
        # best vs worst is a training pair only if the judge really prefers one (not a tie, not a failure)
        check = compare(best, worst).name
        if progress is not None:
            progress()
        # the check is often a comparison the ranking made (a failure counted once); else one more failure
        return ranking, check == "A", ranking.failed or int(check == "FAILED"), extra

    workers = max(1, min(int(getattr(judge, "concurrency", 1)), len(rows)))
    if workers == 1:
        results = [rank_one(row) for row in rows]
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(rank_one, rows))
    report = RankReport()
    for ranking, decided, failed, extra in results:
        report.checks += extra
        report.decided.append(decided)
        report.incomplete.append(failed > 0)
        report.rankings.append(ranking)
        report.prompts += 1
        report.comparisons += ranking.comparisons
        report.failed += failed
    report.judge_calls, report.store_answers = both.calls, both.store_answers
    return report


def score_rank_rows(
    rows: Sequence[Candidates], score: Callable[[list[Any], list[str]], list[float]], *, progress: Any = None
) -> RankReport:
    """Rank every row's completions by a scorer's values (``method=score``: a reward model), no judge.

    ``score(prompts, completions)`` gives one number per completion, higher better (e.g.
    :meth:`preftune.reward.RewardModel.score`); each row is ranked by
    :func:`~preftune.judging.ranking.score_rank`. Best vs worst is decided when the best scores higher.
    """
    report = RankReport()
    for row in rows:
        texts = [row.completion_text(k) for k in range(len(row.completions))]
        values = score([row.prompt] * len(texts), texts)
        ranking = score_rank(values)
        report.rankings.append(ranking)
        report.decided.append(values[ranking.order[0]] > values[ranking.order[-1]])
        report.incomplete.append(False)
        report.prompts += 1
        report.judge_calls += len(values)
        if progress is not None:
            progress()
    return report


def _as_response(prompt: Any, completion: Any) -> Any:
    """A completion in its prompt's format: after a conversational prompt, a string becomes one
    assistant message (TRL's conversational format, which ``preftune train`` reads)."""
    if isinstance(prompt, list) and isinstance(completion, str):
        return [{"role": "assistant", "content": completion}]
    return completion


def write_outputs(
    rows: Sequence[Candidates], report: RankReport, out: Path, pairs_out: Path | None, pairing: str
) -> None:
    """Ranked rows to ``out``; pairs (best vs worst, or all) to ``pairs_out``; each written atomically."""
    ranked, pairs = [], []
    kept = [d and not i for d, i in zip(report.decided, report.incomplete, strict=True)]
    for row, ranking, decided in zip(rows, report.rankings, kept, strict=True):
        ranks = [0] * len(row.completions)
        for place, k in enumerate(ranking.order):
            ranks[k] = place
        completions = [_as_response(row.prompt, c) for c in row.completions]
        ranked.append({"prompt": row.prompt, "completions": completions, "ranks": ranks})
        if not decided:  # undecided or incomplete best vs worst: no pair of this prompt is trustworthy
            continue
        for better, worse in pairs_from_ranking(ranking.order, pairing):
            pairs.append({"prompt": row.prompt, "chosen": completions[better], "rejected": completions[worse]})
    write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ranked))
    if pairs_out is not None:
        write_atomic(pairs_out, "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))
    report.pairs = len(pairs)


@dataclass(frozen=True)
class RankAgreement:
    """How two rankings of the same prompts agree: Kendall τ (mean ± s.e. over prompts), top-1."""

    prompts: int
    tau: float
    tau_stderr: float
    top1: float

    def __str__(self) -> str:
        return (
            f"agreement over {self.prompts} prompts: Kendall tau {self.tau:.3f} ± {self.tau_stderr:.3f}, "
            f"same best completion {self.top1:.3f}"
        )


def _row_key(prompt: Any, completions: Sequence[Any]) -> str:
    return json.dumps([prompt, list(completions)], sort_keys=True, ensure_ascii=False)


def read_rankings(source: str | Path) -> dict[str, list[int]]:
    """A ranked file (``prompt``, ``completions``, ``ranks`` with 0 the best) as {row key: order, best first}.

    Every row checked up front; equal ranks are ordered by position.
    """
    raw = load_rows(source)
    out = {}
    for index, row in enumerate(raw.rows):
        completions, ranks = row.get("completions"), row.get("ranks")
        if not isinstance(completions, list) or not isinstance(ranks, list) or len(ranks) != len(completions):
            raise PreftuneError(f"{raw.origin(index)}: a ranked row needs 'completions' and as many 'ranks'")
        if not all(isinstance(r, int | float) and not isinstance(r, bool) for r in ranks):
            raise PreftuneError(f"{raw.origin(index)}: 'ranks' must be numbers (0 = the best)")
        out[_row_key(row.get("prompt"), completions)] = sorted(range(len(ranks)), key=lambda k: (ranks[k], k))
    return out


def compare_rankings(rows: Sequence[Candidates], report: RankReport, other: dict[str, list[int]]) -> RankAgreement:
    """Kendall τ and top-1 agreement between this ranking and ``other`` on the prompts both ranked."""
    taus, tops = [], []
    for row, ranking in zip(rows, report.rankings, strict=True):
        order = other.get(_row_key(row.prompt, [_as_response(row.prompt, c) for c in row.completions]))
        order = order or other.get(_row_key(row.prompt, row.completions))
        if order is None:
            continue
        taus.append(kendall_tau(ranking.order, order))
        tops.append(1.0 if top1_agreement(ranking.order, order) else 0.0)
    if not taus:
        raise PreftuneError("the file to compare with ranks none of these prompts with the same completions")
    from preftune.judging.agreement import mean_stderr

    mean, stderr = mean_stderr(taus)
    return RankAgreement(len(taus), mean, stderr, sum(tops) / len(tops))
