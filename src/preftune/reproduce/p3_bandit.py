"""P3's bandit claims, measured with :mod:`preftune.lab.bandit`: the far peak and the near peak.

**Score.** For each run (method × regime × seed), the mean of the exact true reward over the
training steps 0..T: the area under the reward curve divided by its length. A method that reaches
the peak sooner has a larger score; a method that never leaves π_ref scores the initial reward.

**Contrasts** (differences of scores, with 95% intervals over seeds). Seed s of every method ×
regime is one independent run, so for each seed the group difference d_s below is an i.i.d.
draw, and the contrast is mean(d_s) with its Student-t interval over the seeds:

- *on-policy − offline*: d_s = mean over methods of [score(m, on-policy, s) − score(m, offline, s)];
- *negative gradient − none, in regime R*: d_s = mean over m ∈ {bon_neg, dpo, ipo, reinforce} of
  score(m, R, s) − mean over m ∈ {bon, rwr} of score(m, R, s).

**Rules** (:mod:`preftune.reproduce.verdicts`, margin δ): on the far peak, each contrast must lie
*clearly above* +δ; on the near peak, each must lie *within* [−δ, +δ].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from preftune.lab.bandit import BanditResult
from preftune.reproduce.report import ClaimSection, markdown_table
from preftune.reproduce.verdicts import Interval, aggregate, clearly_above, mean_interval, within_margin

NEGATIVE_GRADIENT = ("bon_neg", "dpo", "ipo", "reinforce")
NO_NEGATIVE_GRADIENT = ("bon", "rwr")

FAR_CLAIM = (
    "When the reward peaks where the reference policy puts little mass, methods that sample from the "
    "current policy (on-policy) and methods that also push down the likelihood of bad samples (a "
    "negative gradient: on-policy DPO/IPO, REINFORCE, best-of-N with a negative term) climb to the "
    "high-reward region in far fewer gradient steps than offline training or than positive-only "
    "objectives (filtered imitation of the best sample, reward-weighted regression)."
)
NEAR_CLAIM = (
    "When the reward peaks where the reference policy already has most of its mass, the choice hardly "
    "matters: offline and on-policy, with or without a negative gradient, all methods improve about "
    "equally fast."
)


@dataclass(frozen=True)
class Contrast:
    """A difference of group scores: ``name`` (first − second) with its 95% interval over seeds."""

    name: str
    interval: Interval


def run_scores(result: BanditResult) -> dict[tuple[str, str], Tensor]:
    """``(method, regime) -> [S]``: per seed, the true reward averaged over steps 0..T (see the module)."""
    return {(c.method, c.regime): c.rewards.mean(dim=1) for c in result.curves}


def bandit_contrasts(result: BanditResult) -> list[Contrast]:
    """The contrasts of the module docstring that ``result``'s methods and regimes allow."""
    scores, config = run_scores(result), result.config
    contrasts = []
    if set(config.regimes) == {"on_policy", "offline"}:
        diffs = torch.stack([scores[m, "on_policy"] - scores[m, "offline"] for m in config.methods]).mean(0)
        contrasts.append(Contrast("on-policy − offline (every method)", mean_interval(diffs)))
    negative = [m for m in config.methods if m in NEGATIVE_GRADIENT]
    positive = [m for m in config.methods if m in NO_NEGATIVE_GRADIENT]
    if negative and positive:
        for regime in config.regimes:
            first = torch.stack([scores[m, regime] for m in negative]).mean(0)
            second = torch.stack([scores[m, regime] for m in positive]).mean(0)
            name = f"negative gradient − none, {regime.replace('_', '-')}"
            contrasts.append(Contrast(name, mean_interval(first - second)))
    return contrasts


def _number(value: float | None, digits: int = 0) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def summary_table(result: BanditResult) -> str:
    """Per method × regime: final reward and score with 95% intervals, seeds reaching the threshold, and
    the median steps and samples to it."""
    scores, threshold = run_scores(result), result.config.threshold
    rows = []
    for row in result.summary():
        final = Interval(row.final, row.final - row.ci, row.final + row.ci)
        score = mean_interval(scores[row.method, row.regime])
        rows.append(
            (
                row.method,
                row.regime.replace("_", "-"),
                final.text(),
                score.text(),
                f"{row.reached}/{row.seeds}",
                _number(row.steps_to_threshold),
                _number(row.samples_to_threshold),
            )
        )
    header = [
        "method",
        "regime",
        "final reward [95% CI]",
        "score: mean reward over steps [95% CI]",
        f"seeds reaching {threshold:g}",
        f"median steps to {threshold:g}",
        f"samples to {threshold:g}",
    ]
    return markdown_table(header, rows)


def contrast_table(contrasts: list[Contrast], rule: str, margin: float, far: bool) -> tuple[str, list[bool]]:
    """The contrasts with the rule's outcome for each; and the outcomes."""
    check = (lambda c: clearly_above(c, margin)) if far else (lambda c: within_margin(c, margin))
    passed = [check(c.interval) for c in contrasts]
    rows = [(c.name, c.interval.text(), "pass" if ok else "fail") for c, ok in zip(contrasts, passed, strict=True)]
    return markdown_table(["contrast (score difference)", "estimate [95% CI]", rule], rows), passed


def _setup(result: BanditResult) -> str:
    config = result.config
    return (
        f"{len(config.methods)} methods × {len(config.regimes)} regimes, {config.seeds} seeds, {config.steps} Adam "
        f"steps (lr {config.lr:g}), C = {config.samples_per_context} samples per context, K = {config.contexts} "
        f"contexts, {config.offline_groups} offline groups per context; threshold {config.threshold:g}. "
        f"Reward under π_ref: {result.initial_reward:.3f}. Wall time {result.seconds:.0f} s."
    )


def _reason(contrasts: list[Contrast], passed: list[bool], margin: float, far: bool) -> str:
    if not contrasts:
        return "no contrast could be formed from the methods and regimes run."
    rule = f"clearly above +{margin:g}" if far else f"within ±{margin:g}"
    ok = [c.name for c, p in zip(contrasts, passed, strict=True) if p]
    bad = [f"{c.name} = {c.interval.text()}" for c, p in zip(contrasts, passed, strict=True) if not p]
    text = f"{len(ok)} of {len(contrasts)} contrasts lie {rule}"
    return text + (f"; not: {'; '.join(bad)}." if bad else ".")


def bandit_section(
    result: BanditResult, margin: float, figures: tuple[str, ...], sequence: bool = False
) -> ClaimSection:
    """The far-peak ("much sooner") or near-peak ("all alike") claim, by ``result.config.peak``; with
    ``sequence``, measured on the sequence variant (``result`` a ``SequenceBanditResult``: its curves hold the
    evaluated steps, so the score is the mean over those, evenly spaced)."""
    far = result.config.peak == "far"
    contrasts = bandit_contrasts(result)
    rule = f"rule: CI above +{margin:g}" if far else f"rule: CI within ±{margin:g}"
    table, passed = contrast_table(contrasts, rule, margin, far)
    verdict = aggregate(passed)
    measured = "\n\n".join(
        [
            _setup(result),
            "Contrasts of the score (mean true reward over the training steps; see *How the verdicts are decided*):",
            table,
            "Every method × regime:",
            summary_table(result),
        ]
    )
    payload = result.to_json()
    data = {
        "config": payload["config"],
        "initial_reward": result.initial_reward,
        "margin": margin,
        "contrasts": [
            {"name": c.name, **c.interval.to_dict(), "passed": p} for c, p in zip(contrasts, passed, strict=True)
        ],
        "summary": payload["summary"],
    }
    title = (
        "Far reward peak: on-policy and negative-gradient methods reach it much sooner"
        if far
        else "Near reward peak: all methods are alike"
    )
    key = "far_peak" if far else "near_peak"
    if sequence:
        config = result.config
        title += f" (sequence variant: a tiny transformer, V = {config.vocab}, L = {config.length})"
        key += "_sequence"
    return ClaimSection(
        key,
        title,
        FAR_CLAIM if far else NEAR_CLAIM,
        measured,
        verdict,
        _reason(contrasts, passed, margin, far),
        figures,
        data,
    )
