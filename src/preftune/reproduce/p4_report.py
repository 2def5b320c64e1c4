"""P4's report sections (Chen et al. 2024): (a), (b) from :mod:`preftune.reproduce.p4_ranking`'s numbers, with
the ranking study's figure; (c) is :func:`preftune.reproduce.p4_bcr.bcr_section`; (d) stated as not run. Verdicts
from :mod:`preftune.reproduce.rules`."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure

from preftune.lab.plots import PALETTE
from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.p4_ranking import SCORE, RankingStudy, calls_by_size, calls_per_judge, taus_for_rule
from preftune.reproduce.report import ClaimSection, machine, markdown_table
from preftune.reproduce.rules import calls_checks, claim_reason, claim_verdict, ranking_checks
from preftune.reproduce.verdicts import mean_interval, wilson

CALLS_CLAIM = (
    "Iterative pairwise ranking (binary insertion with a pairwise judge, each comparison asked in both orders) "
    "ranks N candidates with at most about N·⌈log2 N⌉ comparisons, fewer judge calls than a round robin's "
    "N(N−1)/2."
)
RANKING_CLAIM = (
    "Ranking candidates by pairwise comparisons (IPR with a judge) agrees better with the true preference order "
    "than the usual baseline, a reward model that scores each candidate alone."
)
PIPELINE_CLAIM = (
    "The whole pipeline (generate N candidates, rank them by IPR, train DPO + BCR on best vs worst) beats the same "
    "training on the data's original pairs."
)


def ranking_figure(study: RankingStudy) -> Figure:
    """Left: ordered judge calls per prompt against N (IPR per judge, round robin, IPR's bound); right: mean
    Kendall τ with the human order, 95% interval over prompts, per ranker."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    calls_ax, tau_ax = figure.subplots(1, 2)
    table = calls_by_size(study)
    sizes = list(table)
    calls_ax.plot(sizes, [table[n]["round_robin"] for n in sizes], "k-o", label="round robin N(N−1)")
    calls_ax.plot(sizes, [table[n]["bound"] for n in sizes], "k--", label="IPR bound")
    for i, judge in enumerate(study.judges):
        calls_ax.plot(sizes, [table[n][judge] for n in sizes], "o:", color=PALETTE[i % len(PALETTE)], label=judge)
    calls_ax.set_xticks(sizes)
    calls_ax.set_xlabel("replies per prompt N")
    calls_ax.set_ylabel("ordered judge calls per prompt (mean)")
    calls_ax.legend(fontsize=8)
    names = list(study.records)
    for y, name in enumerate(names):
        tau = mean_interval(study.records[name].taus)
        low, high = (tau.low, tau.high) if tau.known else (tau.estimate, tau.estimate)
        tau_ax.errorbar([tau.estimate], [y], xerr=[[tau.estimate - low], [high - tau.estimate]], fmt="o", capsize=4)
    tau_ax.axvline(0.0, color="#888", linewidth=0.8)
    tau_ax.set_yticks(range(len(names)), names, fontsize=8)
    tau_ax.invert_yaxis()
    tau_ax.set_xlabel("Kendall τ with the human ranks (mean, 95% CI over prompts)")
    for ax in (calls_ax, tau_ax):
        ax.grid(alpha=0.3)
    figure.suptitle("P4 on the OpenAssistant trees: judge calls and agreement with the human ranking")
    return figure


def calls_section(study: RankingStudy, figures: tuple[str, ...]) -> ClaimSection:
    """(a): ordered calls per prompt, IPR against round robin, per judge (paired over prompts)."""
    checks = calls_checks(calls_per_judge(study))
    table = calls_by_size(study)
    judges = list(study.judges)
    header = ["N", "prompts", "round robin", "IPR bound", *(f"IPR, {j}" for j in judges)]
    rows = [
        (n, int(r["prompts"]), f"{r['round_robin']:.0f}", f"{r['bound']:.0f}", *(f"{r[j]:.2f}" for j in judges))
        for n, r in table.items()
    ]
    measured = (
        f"{len(study.sizes)} prompts (ranked groups of replies), N = {min(study.sizes)}..{max(study.sizes)}. "
        "Ordered judge calls per prompt (each comparison asked in both orders, no cache; identical texts are a "
        "tie without a call):\n\n" + markdown_table(header, rows)
    )
    data = {"checks": [c.to_json() for c in checks], "by_size": {str(n): r for n, r in table.items()}}
    title = "(a) IPR needs fewer judge calls than a round robin"
    return ClaimSection(
        "calls", title, CALLS_CLAIM, measured, claim_verdict(checks), claim_reason(checks), figures, data
    )


def _ranker_rows(study: RankingStudy) -> list[tuple[str, ...]]:
    rows = []
    for name, record in study.records.items():
        hits = sum(record.top1)
        rows.append((name, mean_interval(record.taus).text(), wilson(hits, len(record.top1)).text()))
    return rows


def ranking_section(study: RankingStudy, gold: GoldEvaluator, figures: tuple[str, ...]) -> ClaimSection:
    """(b): Kendall τ and top-1 agreement with the human ranks, IPR per judge against the gold model's scores."""
    checks = ranking_checks(taus_for_rule(study), baseline=SCORE, baseline_valid=gold.above_chance)
    table = markdown_table(
        ["ranker", "Kendall τ (95% CI over prompts)", "top-1 agreement (95% Wilson)"], _ranker_rows(study)
    )
    measured = "\n\n".join(
        [
            f"{len(study.sizes)} prompts; the human ranks of the sibling replies are the truth. `score` ranks by the "
            f"gold reward model's reward of each reply alone (trained on HH-RLHF, held-out accuracy "
            f"{gold.accuracy.text()} there; never trained on these trees). `random` is a seeded coin-flip judge, a "
            "control: shown, never checked. Round-robin rows are shown for comparison.",
            table,
            "The checks compare IPR's τ per judge with `score`'s τ, paired over prompts (Student-t).",
        ]
    )
    data = {"checks": [c.to_json() for c in checks]}
    title = "(b) IPR ranks closer to the human order than scoring each reply alone"
    return ClaimSection(
        "ranking", title, RANKING_CLAIM, measured, claim_verdict(checks), claim_reason(checks), figures, data
    )


def preamble(scale: Any, seconds: Mapping[str, float], gold: GoldEvaluator, source: str) -> str:
    """Who wrote the report, when, on what; the data and the gold evaluator."""

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cached = seconds.get("gold", 0.0) < gold.seconds / 2  # read from the cache, trained by an earlier run
    parts = ", ".join(
        f"gold model from the cache (trained in {gold.seconds:.0f} s)" if k == "gold" and cached else f"{k} {v:.0f} s"
        for k, v in seconds.items()
        if k != "total"
    )
    usable = "above chance" if gold.above_chance else "at chance"
    return (
        "P4 is Chen et al. (2024), *Towards Improved Preference Optimization Pipeline: from Data Generation to "
        f"Budget-Controlled Regularization*. This report was written by `preftune reproduce P4 --scale {scale.name}` "
        f"({machine()}) on {now}, in {seconds['total'] / 60:.1f} minutes ({parts}). The paper's claims are "
        "paraphrased; verdicts are computed from the numbers by the rules under *How the verdicts are decided*; "
        "intervals are 95%.\n\n"
        f"**Data.** `{source}` (OpenAssistant message trees, {scale.trees or 'all'} trees, turns `{scale.turns}`): "
        "every user turn with at least two ranked assistant replies is one prompt. Its replies are shuffled "
        f"(seed {scale.seed}) before ranking: the file lists them in rank order, and a ranking that keeps the input "
        "order among candidates it cannot separate would otherwise inherit the truth.\n\n"
        f"**The gold evaluator.** A reward model trained by `preftune train-rm`'s code on {gold.train_pairs} HH-RLHF "
        f"harmless-base pairs; held-out accuracy **{gold.accuracy.text()}** on {gold.held_out_pairs} pairs "
        f"({usable}). It is kept off the OpenAssistant trees on purpose (their human ranks are (a) and (b)'s "
        "truth), and off every pair (c)'s runs train or are evaluated on (P1's pairs at this scale)."
    )


def appendix(bcr_rule: str) -> str:
    """The rules of every claim; ``bcr_rule``: (c)'s, in words (:func:`preftune.reproduce.rules.bcr_rule`)."""
    return f"""## How the verdicts are decided

- A claim is a list of checks; each passes, fails, or cannot be decided here. **holds**: every decided check
  passes; **partly**: some do; **does not hold here**: none; **cannot be tested here**: none could be decided;
  **not run**: the study was not run. (c) asks whether *some* budget supports the claim: its own rule below.
- **(a)** per judge (`longer`, `shorter`; the `random` control is shown, never checked): round robin's ordered
  calls − IPR's, per prompt, mean with a 95% Student-t interval over prompts; passes when the whole interval lies
  above 0.
- **(b)** per judge (`longer`, `shorter`; the `random` control is never checked): IPR's Kendall τ (tau-a) with
  the human order − the gold scores' τ, per prompt, 95% Student-t interval over prompts; passes when it lies
  above 0. Undecided when neither the judge's nor the scores' own τ lies above 0 (no ranker above chance), or when
  the gold model is at chance on its own held-out pairs (then `score` is no reward-model baseline).
  Top-1 agreement is shown with its 95% Wilson interval, not used in the verdict.
- **(c)** {bcr_rule} Win rates against the starting model (gold and `longer`) are shown, not used in the verdict.
"""
