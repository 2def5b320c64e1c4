"""P2's report (Grinsztajn et al. 2024, *Averaging log-likelihoods in direct alignment*): per run its mean answer
length and mean gold score, the scatter of one against the other, and the verdict of
:func:`preftune.reproduce.rules.averaging_checks`."""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from matplotlib.figure import Figure

from preftune.lab.bandit import t_quantile
from preftune.lab.plots import PALETTE
from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.report import ClaimSection, machine, markdown_table
from preftune.reproduce.rules import averaging_checks, claim_reason, claim_verdict
from preftune.reproduce.verdicts import Interval, mean_interval

CLAIM = (
    "Averaging the log-likelihoods over tokens (instead of summing them) makes direct alignment objectives such as "
    "DPO and IPO invariant to response length: the summed objectives drift the generation length, the averaged "
    "ones do not; across runs there is a trade-off between the generation length and the score it earns."
)


@dataclass(frozen=True)
class Point:
    """One trained run: its loss, averaging, β and seed, and per held-out prompt its answer length and gold score."""

    loss: str
    averaged: bool
    beta: float
    seed: int
    lengths: list[int]
    scores: list[float]

    @property
    def length(self) -> Interval:
        return mean_interval([float(n) for n in self.lengths])

    @property
    def score(self) -> Interval:
        return mean_interval(self.scores)

    def to_json(self) -> dict[str, Any]:
        keys = ("loss", "averaged", "beta", "seed", "lengths", "scores")
        return {k: getattr(self, k) for k in keys}


def slope(xs: Sequence[float], ys: Sequence[float]) -> Interval:
    """The least-squares slope of ``ys`` on ``xs`` with its 95% Student-t interval (NaN with fewer than 3 points or
    no spread in ``xs``)."""
    n = len(xs)
    mx, my = sum(xs) / max(n, 1), sum(ys) / max(n, 1)
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 3 or sxx <= 0:
        estimate = math.nan if sxx <= 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
        return Interval(estimate, math.nan, math.nan)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - my - b * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    half = t_quantile(n - 2) * math.sqrt(residual / (n - 2) / sxx)
    return Interval(b, b - half, b + half)


def length_changes(points: Sequence[Point], start_length: float) -> dict[str, dict[bool, list[float]]]:
    """``loss -> averaged? -> |mean length − start's|`` per run, in the same (β, seed) order for both sides."""
    out: dict[str, dict[bool, list[float]]] = {}
    for p in sorted(points, key=lambda p: (p.loss, p.beta, p.seed)):
        out.setdefault(p.loss, {False: [], True: []})[p.averaged].append(abs(p.length.estimate - start_length))
    return out


def scatter_figure(points: Sequence[Point], start: Point) -> Figure:
    """Mean gold score against mean answer length per run (95% intervals over prompts on both axes): colour the
    loss, filled averaged, hollow summed; the starting model in black."""
    figure = Figure(figsize=(7, 5), layout="constrained")
    ax = figure.subplots()
    losses = sorted({p.loss for p in points})
    for p in [start, *points]:
        colour = "black" if p is start else PALETTE[losses.index(p.loss) % len(PALETTE)]
        x, y = p.length, p.score
        xerr = [[x.estimate - x.low], [x.high - x.estimate]] if x.known else None
        yerr = [[y.estimate - y.low], [y.high - y.estimate]] if y.known else None
        face = colour if (p is start or p.averaged) else "white"
        ax.errorbar([x.estimate], [y.estimate], xerr=xerr, yerr=yerr, fmt="o", color=colour, mfc=face, capsize=3)
        label = "start" if p is start else f"β={p.beta:g}"
        ax.annotate(label, (x.estimate, y.estimate), fontsize=7, xytext=(4, 4), textcoords="offset points")
    for i, loss in enumerate(losses):
        ax.plot([], [], "o", color=PALETTE[i % len(PALETTE)], label=f"{loss} (filled: averaged, hollow: summed)")
    ax.set_xlabel("mean answer length (characters, 95% CI over prompts)")
    ax.set_ylabel("mean gold reward (95% CI over prompts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.suptitle("P2: generation length against gold score, summed vs averaged log-likelihoods")
    return figure


def averaging_section(
    points: Sequence[Point], start: Point, gold: GoldEvaluator, figures: tuple[str, ...]
) -> ClaimSection:
    """The claim, its two kinds of checks (length moves more when summed; the length–score trend) and the table."""
    changes = length_changes(points, start.length.estimate)
    trend = slope([p.length.estimate for p in points], [p.score.estimate for p in points])
    checks = averaging_checks(changes, trend, gold.above_chance)
    rows = [
        (p.loss, "averaged" if p.averaged else "summed", f"{p.beta:g}", p.seed, p.length.text(1), p.score.text())
        for p in sorted(points, key=lambda p: (p.loss, p.averaged, p.beta, p.seed))
    ]
    rows.insert(0, ("start", "—", "—", "—", start.length.text(1), start.score.text()))
    table = markdown_table(["loss", "log-likelihoods", "β", "seed", "mean length (chars)", "mean gold reward"], rows)
    measured = "\n\n".join(
        [
            "Every run trains from the same start on the same pairs; lengths and gold rewards are of the greedy "
            "answers to the same held-out prompts (95% Student-t intervals over prompts).",
            table,
            f"Trend across runs: gold reward per character of mean length, least-squares slope {trend.text(5)} "
            "(95% Student-t over runs).",
        ]
    )
    data = {"checks": [c.to_json() for c in checks], "trend": trend.to_dict(), "length_change": _keyed(changes)}
    title = "Averaging makes direct alignment length-invariant, with a length–score trade-off"
    return ClaimSection("averaging", title, CLAIM, measured, claim_verdict(checks), claim_reason(checks), figures, data)


def _keyed(changes: Mapping[str, Mapping[bool, list[float]]]) -> dict[str, dict[str, list[float]]]:
    return {loss: {"summed": v[False], "averaged": v[True]} for loss, v in changes.items()}


def preamble(scale: Any, seconds: Mapping[str, float], gold: GoldEvaluator) -> str:
    """Who wrote the report, when, on what; the runs and the gold evaluator."""

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total")
    training = scale.training
    usable = "above chance: its verdicts count" if gold.above_chance else "at chance: its checks cannot be decided"
    return (
        "P2 is Grinsztajn et al. (2024), *Averaging log-likelihoods in direct alignment*. This report was written by "
        f"`preftune reproduce P2 --scale {scale.name}` ({machine()}) on {now}, in {seconds['total'] / 60:.1f} minutes "
        f"({parts}). The claim is paraphrased; the verdict is computed by the rules below; intervals are 95%.\n\n"
        f"**Setup.** Model `{training['model']['name']}`, data `{training['data']['train']}`, "
        f"{training['optim']['max_steps']} steps of {training['optim']['batch_size']} pairs at lr "
        f"{training['optim']['lr']}; losses {list(scale.losses)} × summed/averaged × β ∈ {list(scale.betas)} × seeds "
        f"{list(scale.seeds)}; greedy answers of at most {scale.max_new_tokens} new tokens to {scale.prompts} "
        "held-out prompts.\n\n"
        f"**The gold evaluator.** A reward model trained by `preftune train-rm`'s code on {gold.train_pairs} HH-RLHF "
        f"pairs disjoint from the data above; held-out accuracy **{gold.accuracy.text()}** on {gold.held_out_pairs} "
        f"pairs: {usable}."
    )


def appendix() -> str:
    return """## How the verdicts are decided

- **Length invariance**, per loss: |mean answer length − the start's| for each summed run minus the averaged run of
  the same β and seed; mean with a 95% Student-t interval over those pairs; passes when it lies above 0 (summing
  moves the length more).
- **Trade-off**: the least-squares slope of mean gold reward on mean answer length across every run, 95%
  Student-t interval; passes when the interval excludes 0, and the verdict names its sign ("longer scores higher"
  or "shorter scores higher"). Undecided when the gold evaluator is at chance (its held-out accuracy's 95% Wilson
  interval does not lie above 0.5).
- **holds**: every decided check passes; **partly**: some; **does not hold here**: none; **cannot be tested
  here**: none decided.
"""
