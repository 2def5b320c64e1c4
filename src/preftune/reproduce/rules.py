"""Verdict rules of the P1, P2 and P4 reproductions, on plain numbers (tested on hand-made ones).

A claim is a list of :class:`Check` s. A check passes (``True``), fails (``False``) or cannot be
decided (``None``): it needs the gold evaluator (:mod:`preftune.reproduce.gold`) and the evaluator is
at chance, or it needs a ranker that agrees with the ground truth better than chance and none does.
:func:`claim_verdict` aggregates the decided checks with :func:`preftune.reproduce.verdicts.aggregate`
(holds / partly / does not hold here) and answers **cannot be tested here** when none was decided.
P4 (c) asks whether *some* budget δ of a grid supports its claim: :func:`bcr_verdict` (holds / does not
hold here / inconclusive), stated in words by :func:`bcr_rule`.

Intervals are 95%: Student-t over seeds for per-seed numbers (:func:`paired`), percentile bootstrap
over prompts for win rates. "Above" always means the whole interval lies above the bound.

Papers: P1 Tuan & Wang (2024), *A Gradient Analysis Framework for Rewarding Good and Penalizing Bad
Examples in Language Models*; P2 Grinsztajn et al. (2024), *Averaging log-likelihoods in direct
alignment*; P4 Chen et al. (2024), *Towards Improved Preference Optimization Pipeline: from Data
Generation to Budget-Controlled Regularization*.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from preftune.reproduce.verdicts import (
    DOES_NOT_HOLD,
    HOLDS,
    INCONCLUSIVE,
    UNTESTABLE,
    Interval,
    aggregate,
    mean_interval,
)

ZERO = 1e-12  # a gradient weight at most this is no push at all


@dataclass(frozen=True)
class Check:
    """One rule applied to the numbers: ``passed`` is None when it cannot be decided here."""

    name: str
    passed: bool | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


def claim_verdict(checks: Sequence[Check]) -> str:
    """Aggregate of the decided checks; ``cannot be tested here`` when none was decided."""
    decided = [c.passed for c in checks if c.passed is not None]
    return aggregate(decided) if decided else UNTESTABLE


def claim_reason(checks: Sequence[Check], undecided: str = "cannot be tested") -> str:
    """One sentence: how many checks pass, each check's outcome and its numbers; ``undecided`` names the outcome
    of a check that decided nothing (``inconclusive`` where the evaluator works but cannot separate the two)."""
    decided = [c for c in checks if c.passed is not None]
    passed = sum(bool(c.passed) for c in decided)
    outcome = {True: "pass", False: "fail", None: undecided}
    parts = "; ".join(f"{c.name}: {outcome[c.passed]} ({c.detail})" for c in checks)
    return f"{passed} of {len(decided)} decided checks pass — {parts}."


def evaluator_usable(accuracy: Interval) -> bool:
    """An evaluator is usable when its held-out accuracy's whole interval lies above 0.5 (chance)."""
    return accuracy.known and accuracy.low > 0.5


def above(interval: Interval, bound: float) -> bool:
    """The whole interval lies above ``bound``."""
    return interval.known and interval.low > bound


def not_below(interval: Interval, bound: float) -> bool:
    """The whole interval lies at or above ``bound``: the value is shown not to fall below it."""
    return interval.known and interval.low >= bound


def paired(first: Sequence[float], second: Sequence[float]) -> Interval:
    """The mean of the per-seed differences first − second, with its Student-t interval."""
    if len(first) != len(second):
        raise ValueError(f"paired values need equal lengths, got {len(first)} and {len(second)}")
    return mean_interval([a - b for a, b in zip(first, second, strict=True)])


def win_check(name: str, rate: Interval, usable: bool) -> Check:
    """``name`` passes when the win rate's interval lies above 0.5; undecided with an evaluator at chance."""
    if not usable:
        return Check(name, None, f"win rate {rate.text()}, but the gold evaluator is at chance")
    return Check(name, above(rate, 0.5), f"gold win rate {rate.text()}")


# --- P1 (a): the gradient analysis ------------------------------------------------------------------


def _series(analysis: Mapping[str, Any], objective: str, series: str) -> tuple[list[float], list[float]]:
    """``(xs, values)`` of one curve of an analysis as ``gradient_analysis.json`` writes it (NaN for null)."""
    rows = [r for r in analysis["rows"] if r["objective"] == objective and r["series"] == series]
    values = [math.nan if r["value"] is None else float(r["value"]) for r in rows]
    return [float(r["x"]) for r in rows], values


def _at(xs: Sequence[float], values: Sequence[float], x: float) -> float:
    return values[min(range(len(xs)), key=lambda i: abs(xs[i] - x))]


def gradient_checks(document: Mapping[str, Any]) -> list[Check]:
    """P1's four statements about the gradient weights, read off ``preftune analyze gradients``' JSON."""
    weights = document["analyses"]["weight_vs_probability"]
    margin = document["analyses"]["dpo_weight_vs_margin"]
    _, mle_good = _series(weights, "mle", "w_good")
    _, mle_bad = _series(weights, "mle", "w_bad")
    ps, ul_bad = _series(weights, "ul", "w_bad")
    _, ex_bad = _series(weights, "exmate", "w_bad")
    hs, dpo_w = _series(margin, "dpo", "w_good")
    ul_ratio = _at(ps, ul_bad, 0.999) / _at(ps, ul_bad, 0.99)
    ex_ratio = _at(ps, ex_bad, 0.999) / _at(ps, ex_bad, 0.99)
    fall = _at(hs, dpo_w, 50.0) / _at(hs, dpo_w, 0.0)
    increasing = all(b >= a for a, b in itertools.pairwise(ul_bad))
    decreasing = all(b <= a * (1 + 1e-9) for a, b in itertools.pairwise(dpo_w))
    return [
        Check(
            "MLE pushes only up",
            min(mle_good) > 0 and max(abs(w) for w in mle_bad) <= ZERO,
            f"w_good ≥ {min(mle_good):.3g}, |w_bad| ≤ {max(abs(w) for w in mle_bad):.3g} over p",
        ),
        Check(
            "UL's penalty grows without bound as p → 1",
            increasing and ul_ratio > 5,
            f"w_bad rises with p: {increasing}; w_bad(0.999)/w_bad(0.99) = {ul_ratio:.3g}",
        ),
        Check(
            "ExMATE's penalty stays bounded",
            all(math.isfinite(w) for w in ex_bad) and ex_ratio < 1.5,
            f"w_bad(0.999)/w_bad(0.99) = {ex_ratio:.3g}, at most {max(ex_bad):.3g}",
        ),
        Check(
            "DPO's weight falls as the margin grows",
            decreasing and fall < 0.1,
            f"w falls with h: {decreasing}; w(+50)/w(0) = {fall:.2g}",
        ),
    ]


# --- P1 (b), (c): statistical metrics and win rates of trained objectives -------------------------------

PerSeed = Mapping[str, Mapping[str, Sequence[float]]]
"""``objective -> metric -> one value per seed`` (the same seeds, in the same order, for every objective)."""


def surrogate_checks(metrics: PerSeed, head_to_head: Interval, usable: bool, margin: float) -> list[Check]:
    """P1 (b) ExMATE is a better surrogate for MLE: it ranks held-out pairs better, keeps the chosen
    responses' likelihood (its drift not below MLE's by more than ``margin`` nats/token) and wins head to head
    under the gold evaluator."""
    accuracy = paired(metrics["exmate"]["accuracy"], metrics["mle"]["accuracy"])
    drift = paired(metrics["exmate"]["chosen_drift"], metrics["mle"]["chosen_drift"])
    return [
        Check("accuracy: exmate − mle above 0", above(accuracy, 0.0), f"{accuracy.text()} over seeds"),
        Check(
            f"chosen drift: exmate − mle not below −{margin:g}",
            not_below(drift, -margin),
            f"{drift.text()} nats/token over seeds",
        ),
        win_check("gold: exmate beats mle head to head", head_to_head, usable),
    ]


def companion_checks(
    metrics: PerSeed, head_to_head: Mapping[str, Interval], usable: bool, baseline: str = "dpo+mle"
) -> list[Check]:
    """P1 (c) DPO + ExMATE beats DPO + MLE: for each variant (``head_to_head``'s keys, joint and staged) its
    held-out accuracy and margin lie above the baseline's (paired by seed) and it wins head to head."""
    checks = []
    for variant, rate in head_to_head.items():
        for metric in ("accuracy", "margin"):
            diff = paired(metrics[variant][metric], metrics[baseline][metric])
            checks.append(Check(f"{metric}: {variant} − {baseline} above 0", above(diff, 0.0), diff.text()))
        checks.append(win_check(f"gold: {variant} beats {baseline} head to head", rate, usable))
    return checks


# --- P2: averaging and length ---------------------------------------------------------------------------


def averaging_checks(
    length_change: Mapping[str, Mapping[bool, Sequence[float]]], trend: Interval, usable: bool
) -> list[Check]:
    """P2: averaging makes direct alignment length-invariant, with a length-score trade-off.

    ``length_change``: ``loss -> averaged? -> |mean length − start's mean length|`` per run, the summed and
    averaged runs paired (same β and seed, in order). One check per loss: the summed runs move the length more
    (|Δ| summed − |Δ| averaged above 0). ``trend``: the slope (or correlation) of gold score on mean length
    across runs; the trade-off check passes when its interval excludes 0, in the direction it names.
    """
    checks = []
    for loss, runs in length_change.items():
        diff = paired(runs[False], runs[True])
        checks.append(Check(f"{loss}: summed moves length more than averaged", above(diff, 0.0), f"{diff.text(1)}"))
    direction = "longer scores higher" if trend.estimate > 0 else "shorter scores higher"
    if not usable:
        detail = f"trend {trend.text()}, but the gold evaluator is at chance"
        checks.append(Check("length–score trade-off", None, detail))
    else:
        clear = above(trend, 0.0) or (trend.known and trend.high < 0.0)
        checks.append(Check("length–score trade-off", clear, f"trend {trend.text()}: {direction}"))
    return checks


# --- P4 ----------------------------------------------------------------------------------------------------


def calls_checks(calls: Mapping[str, Mapping[str, Sequence[float]]]) -> list[Check]:
    """P4 (a): per judge, round robin's judge calls per prompt − IPR's, paired over prompts, above 0.

    ``calls``: ``judge -> {"ipr": [...], "round_robin": [...]}``."""
    checks = []
    for judge, counts in calls.items():
        diff = paired(counts["round_robin"], counts["ipr"])
        checks.append(Check(f"{judge}: IPR needs fewer calls than round robin", above(diff, 0.0), diff.text(1)))
    return checks


def ranking_checks(
    taus: Mapping[str, Sequence[float]], baseline: str = "score", baseline_valid: bool = True
) -> list[Check]:
    """P4 (b): per IPR judge, Kendall τ with the human ranks − the scoring baseline's, paired over prompts,
    above 0. Undecided when neither the judge's nor the baseline's τ lies above 0 (no ranker above chance), and
    when the baseline's reward model is itself at chance on its own held-out pairs (``baseline_valid`` False):
    beating a scorer that ranks nothing says nothing of scoring against pairwise judging.

    ``taus``: ``ranker -> τ per prompt`` (the baseline under ``baseline``)."""
    base = mean_interval(taus[baseline])
    checks = []
    for ranker, values in taus.items():
        if ranker == baseline:
            continue
        own, diff = mean_interval(values), paired(values, taus[baseline])
        name = f"{ranker}: IPR closer to the human ranks than {baseline}"
        if not baseline_valid:
            reason = f"τ difference {diff.text()}, but the {baseline} model is at chance on its own held-out pairs"
            checks.append(Check(name, None, reason))
        elif not (above(own, 0.0) or above(base, 0.0)):
            checks.append(Check(name, None, f"τ {own.text()} and {base.text()}: neither above chance"))
        else:
            checks.append(Check(name, above(diff, 0.0), f"τ difference {diff.text()}"))
    return checks


def below(interval: Interval, bound: float) -> bool:
    """The whole interval lies below ``bound``."""
    return interval.known and interval.high < bound


def at_most(interval: Interval, bound: float) -> bool:
    """The whole interval lies at or below ``bound``: the value is shown not to exceed it."""
    return interval.known and interval.high <= bound


def bcr_rule(drift_margin: float, accuracy_margin: float, baseline: str = "dpo") -> str:
    """P4 (c)'s rule in words, as :func:`bcr_checks` and :func:`bcr_verdict` apply it (for the report)."""
    m, a = f"{drift_margin:g}", f"{accuracy_margin:g}"
    return (
        f"For each budget δ of the grid, on the held-out statistics at the end of training, paired by seed "
        f"(95% Student-t interval over seeds): D = chosen drift of `{baseline} + bcr(δ)` − `{baseline}`'s (nats "
        f"per token), A = its accuracy − `{baseline}`'s. δ **supports** the claim when D lies above +{m} and A "
        f"not below −{a} (the whole interval at or above); it **goes against** it when D lies at or below +{m} "
        f"(no rise beyond the margin) or A lies below −{a} (accuracy lost); otherwise it is undecided. No δ is "
        f"decided unless `{baseline}`'s own chosen drift lies below −{m} (plain DPO lowers the chosen "
        f"likelihood; otherwise there is nothing for BCR to keep). The claim **holds** when some δ supports it, "
        f"**does not hold here** when every δ goes against it, and is **inconclusive** otherwise (one seed "
        f"gives no interval: inconclusive). `{baseline} + dpop` (δ = 0) is shown beside, not part of the rule."
    )


def bcr_checks(
    metrics: PerSeed, variants: Sequence[str], drift_margin: float, accuracy_margin: float, baseline: str = "dpo"
) -> list[Check]:
    """P4 (c): one check per BCR variant (one budget δ each), on the end held-out statistics paired by seed
    (:func:`bcr_rule` states it): passes when the variant keeps the chosen drift above the baseline's by more
    than ``drift_margin`` with its accuracy not below the baseline's by more than ``accuracy_margin``; fails
    when its drift is shown not to rise by more than the margin, or its accuracy shown to fall by more than its
    margin; undecided otherwise, and for every variant when the baseline's own drift does not lie below
    −``drift_margin``."""
    base = mean_interval(metrics[baseline]["chosen_drift"])
    falls = below(base, -drift_margin)
    checks = []
    for variant in variants:
        drift = paired(metrics[variant]["chosen_drift"], metrics[baseline]["chosen_drift"])
        accuracy = paired(metrics[variant]["accuracy"], metrics[baseline]["accuracy"])
        detail = f"chosen drift − {baseline}'s {drift.text()} nats/token, accuracy − {baseline}'s {accuracy.text()}"
        passed: bool | None = None
        if not falls:
            detail += f"; {baseline}'s own chosen drift {base.text()} does not lie below −{drift_margin:g}"
        elif above(drift, drift_margin) and not_below(accuracy, -accuracy_margin):
            passed = True
        elif at_most(drift, drift_margin) or below(accuracy, -accuracy_margin):
            passed = False
        name = f"{variant}: chosen likelihood kept above {baseline}'s with accuracy held"
        checks.append(Check(name, passed, detail))
    return checks


def bcr_reason(checks: Sequence[Check]) -> str:
    """One sentence: how many budgets support the claim, go against it or are undecided, each with its numbers."""
    outcome = {True: "supports", False: "goes against", None: "undecided"}
    counts = {word: sum(outcome[c.passed] == word for c in checks) for word in outcome.values()}
    parts = "; ".join(f"{c.name}: {outcome[c.passed]} ({c.detail})" for c in checks)
    summary = ", ".join(f"{n} {word}" for word, n in counts.items())
    return f"Of {len(checks)} budgets: {summary} — {parts}."


def bcr_verdict(checks: Sequence[Check]) -> str:
    """P4 (c)'s verdict over the budgets: **holds** when some check passes, **does not hold here** when every
    check fails, **inconclusive** otherwise (none passes and some are undecided, or there are none)."""
    if any(c.passed is True for c in checks):
        return HOLDS
    if checks and all(c.passed is False for c in checks):
        return DOES_NOT_HOLD
    return INCONCLUSIVE


# --- P4 (d): the whole pipeline against the original pairs ------------------------------------------------


def pipeline_checks(
    head_to_head: Interval, usable: bool, pipeline: str = "pipeline", baseline: str = "original"
) -> list[Check]:
    """P4 (d): the model trained on the pipeline's pairs beats the one trained on the original pairs (same
    objective, steps and seeds), judged head to head by the gold evaluator.

    ``head_to_head``: the gold win rate of ``pipeline``'s answers against ``baseline``'s (ties half), with its
    95% interval over prompts. The check passes when the whole interval lies above 0.5 (**holds**) and fails
    when it lies below 0.5 (the original pairs win: **does not hold here**). It is undecided when the interval
    contains 0.5 or is unknown (the gold evaluator cannot separate the two models: **inconclusive**, by
    :func:`pipeline_verdict`) and when the gold evaluator is at chance on its own held-out pairs."""
    name = f"gold: {pipeline} beats {baseline} head to head"
    if not usable:
        return [Check(name, None, f"win rate {head_to_head.text()}, but the gold evaluator is at chance")]
    if above(head_to_head, 0.5):
        return [Check(name, True, f"gold win rate {head_to_head.text()}, above 0.5")]
    if below(head_to_head, 0.5):
        return [Check(name, False, f"gold win rate {head_to_head.text()}, below 0.5: {baseline} wins")]
    reason = f"gold win rate {head_to_head.text()} contains 0.5: the gold evaluator cannot separate them"
    return [Check(name, None, reason)]


def pipeline_verdict(checks: Sequence[Check], usable: bool) -> str:
    """P4 (d)'s verdict: :func:`claim_verdict`'s, except that an undecided check under a usable gold evaluator
    (its interval contains 0.5) is **inconclusive**, not **cannot be tested here** (kept for an evaluator at
    chance, which can decide nothing)."""
    if usable and checks and all(c.passed is None for c in checks):
        return INCONCLUSIVE
    return claim_verdict(checks)
