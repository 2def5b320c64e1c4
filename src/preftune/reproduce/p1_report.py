"""P1's report sections (Tuan & Wang 2024): numbers from the runs, verdicts from :mod:`preftune.reproduce.rules`."""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from preftune.reproduce.answers import PooledRate, rate_cells, run_rates
from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.p1_runs import Run
from preftune.reproduce.report import ClaimSection, machine, markdown_table
from preftune.reproduce.rules import (
    claim_reason,
    claim_verdict,
    companion_checks,
    gradient_checks,
    surrogate_checks,
)
from preftune.reproduce.verdicts import mean_interval

GRADIENT_CLAIM = (
    "The gradient analysis separates the methods: MLE only pushes the good tokens up; unlikelihood's push-down on "
    "a bad token grows without bound as its probability goes to 1; ExMATE's push-down stays bounded (it fades as "
    "the bad sequence becomes unlikely); DPO's weight, one scalar for every token of both responses, falls as the "
    "margin grows."
)
SURROGATE_CLAIM = (
    "ExMATE (MLE on the good response plus a bounded, exponential penalty on the bad one) is a better surrogate "
    "for MLE: it keeps MLE's pull on the good responses while separating good from bad."
)
COMPANION_CLAIM = (
    "DPO + ExMATE beats DPO + MLE: about 5–7% better on statistical metrics and about 18% higher win rate in "
    "generation. We test both readings, the joint objective and the staged recipe (ExMATE, then DPO on it)."
)
SHOWN = ("accuracy", "margin", "chosen_drift", "logps/chosen")


def per_seed(runs: Mapping[str, Sequence[Run]]) -> dict[str, dict[str, list[float]]]:
    """``variant -> metric -> per-seed values``."""
    return {v: {m: [r.metrics.get(m, float("nan")) for r in seeds] for m in SHOWN} for v, seeds in runs.items()}


def results_table(runs: Mapping[str, Sequence[Run]], scores: Mapping[str, Any], start: list[str]) -> str:
    """Per variant: held-out statistics (mean [95% CI over seeds]) and win rates against the start."""
    values = per_seed(runs)
    rows = []
    for variant in runs:
        stats = [mean_interval(values[variant][m]).text(3) for m in SHOWN]
        rows.append((variant, *stats, *rate_cells(*run_rates(runs, scores, variant, None, start))))
    header = [
        "variant",
        "accuracy",
        "margin",
        "chosen drift (nats/token)",
        "log π(y_w)",
        "gold win rate vs start",
        "`longer` win rate vs start",
        "mean length vs start's (chars)",
    ]
    return markdown_table(header, rows)


def head_to_head_table(
    runs: Mapping[str, Sequence[Run]], scores: Mapping[str, Any], pairs: Sequence[tuple[str, str]]
) -> tuple[str, dict[tuple[str, str], tuple[PooledRate, PooledRate]]]:
    """Head-to-head win rates (gold and ``longer``) of each pair, and how many of their answers are the same
    text (paired by seed and prompt: a win rate of 0.5 from identical answers is no contest), as a table and by
    pair."""
    measured = {pair: run_rates(runs, scores, pair[0], pair[1], []) for pair in pairs}
    rows = [(f"{a} vs {b}", *rate_cells(*measured[a, b]), identical_answers(runs[a], runs[b])) for a, b in pairs]
    header = ["pair", "gold win rate", "`longer` win rate", "mean lengths (chars)", "same answer"]
    return markdown_table(header, rows), measured


def identical_answers(first: Sequence[Run], second: Sequence[Run]) -> str:
    """``"k of n"``: the answers that are the same text in both variants' runs, paired by seed and prompt."""
    pairs = [(x, y) for a, b in zip(first, second, strict=True) for x, y in zip(a.answers, b.answers, strict=True)]
    return f"{sum(x == y for x, y in pairs)} of {len(pairs)}"


def gradient_section(document: Mapping[str, Any], figures: tuple[str, ...]) -> ClaimSection:
    """(a): the four statements, each checked on ``preftune analyze gradients``' numbers."""
    checks = gradient_checks(document)
    rows = [(c.name, "pass" if c.passed else "fail", c.detail) for c in checks]
    measured = (
        "`preftune analyze gradients objectives='mle,ul,exmate,dpo,dpo+mle,dpo+exmate'` (synthetic responses of "
        "10 tokens, exact autograd; no sampling, so no interval). Its headline:\n\n"
        + "\n".join(f"- {line}" for line in document.get("headline", [])[:6])
        + "\n\n"
        + markdown_table(["statement", "check", "numbers"], rows)
    )
    data = {"checks": [c.to_json() for c in checks]}
    title = "(a) The gradient analysis separates MLE, unlikelihood, ExMATE and DPO"
    return ClaimSection(
        "gradients", title, GRADIENT_CLAIM, measured, claim_verdict(checks), claim_reason(checks), figures, data
    )


def surrogate_section(
    runs: Mapping[str, Sequence[Run]], scores: Mapping[str, Any], start: list[str], gold: GoldEvaluator, margin: float
) -> ClaimSection:
    """(b): ExMATE against MLE on the same pairs and seeds."""
    table, measured_rates = head_to_head_table(runs, scores, [("exmate", "mle")])
    gold_rate, longer_rate = measured_rates["exmate", "mle"]
    checks = surrogate_checks(per_seed(runs), gold_rate.rate, gold.above_chance, margin)
    measured = "\n\n".join(
        [
            "Every variant, trained on the same pairs from the same start with the same seeds (intervals over "
            "seeds; win rates: per-prompt means over seeds, bootstrapped over prompts):",
            results_table(runs, scores, start),
            "ExMATE against MLE, head to head:",
            table,
        ]
    )
    data = {
        "checks": [c.to_json() for c in checks],
        "head_to_head": {"gold": gold_rate.to_json(), "longer": longer_rate.to_json()},
    }
    title = "(b) ExMATE is a better surrogate for MLE"
    return ClaimSection(
        "surrogate", title, SURROGATE_CLAIM, measured, claim_verdict(checks), claim_reason(checks), (), data
    )


def companion_section(
    runs: Mapping[str, Sequence[Run]], scores: Mapping[str, Any], gold: GoldEvaluator
) -> ClaimSection:
    """(c): DPO + ExMATE (joint and staged) against DPO + MLE."""
    pairs = [(v, "dpo+mle") for v in ("dpo+exmate", "exmate→dpo") if v in runs]
    table, measured_rates = head_to_head_table(runs, scores, pairs)
    checks = companion_checks(per_seed(runs), {a: measured_rates[a, b][0].rate for a, b in pairs}, gold.above_chance)
    measured = "Head to head against DPO + MLE (statistics in the table of (b)):\n\n" + table
    data = {
        "checks": [c.to_json() for c in checks],
        "head_to_head": {
            f"{a} vs {b}": {"gold": g.to_json(), "longer": n.to_json()} for (a, b), (g, n) in measured_rates.items()
        },
    }
    title = "(c) DPO + ExMATE beats DPO + MLE"
    return ClaimSection(
        "companion", title, COMPANION_CLAIM, measured, claim_verdict(checks), claim_reason(checks), (), data
    )


def preamble(
    settings: Any, seconds: Mapping[str, float], gold: GoldEvaluator, runs: Any, scores: Any, start: Any
) -> str:
    """Who wrote the report, when, on what; the gold evaluator and its held-out accuracy."""

    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items() if k != "total")
    usable = (
        "above chance: its verdicts count"
        if gold.above_chance
        else "at chance: the claims it judges cannot be tested here"
    )
    training = settings.training
    return (
        "P1 is Tuan & Wang (2024), *A Gradient Analysis Framework for Rewarding Good and Penalizing Bad Examples in "
        f"Language Models*. This report was written by `preftune reproduce P1 --scale {settings.name}` ("
        f"{machine()}) on "
        f"{now}, in {seconds['total'] / 60:.1f} minutes ({parts}). The paper's claims are paraphrased. Verdicts are "
        "computed from the numbers by the rules under *How the verdicts are decided*; intervals are 95%.\n\n"
        f"**Setup.** Model `{training['model']['name']}`, data `{training['data']['train']}` "
        f"({training['data'].get('train_size') or 'all'} training pairs, {training['data']['eval_size']} held out by "
        f"prompt), {training['optim']['max_steps']} steps of {training['optim']['batch_size']} pairs at lr "
        f"{training['optim']['lr']}, seeds {list(settings.seeds)}; answers are greedy, at most "
        f"{settings.max_new_tokens} new tokens, to the first {settings.prompts} held-out prompts.\n\n"
        f"**The gold evaluator.** A reward model trained by `preftune train-rm`'s code on {gold.train_pairs} HH-RLHF "
        f"harmless-base pairs whose prompts (and first user turns) appear nowhere in the data above "
        f"({gold.excluded_pairs} pairs left out for that), split by prompt. Held-out accuracy "
        f"**{gold.accuracy.text()}** on {gold.held_out_pairs} pairs (95% Wilson; {gold.accuracy_before:.3f} before "
        f"training): {usable}. Every win rate is shown beside the `longer` judge's and the mean lengths, so a length "
        "effect is visible."
    )


def appendix() -> str:
    return """## How the verdicts are decided

- A claim is a list of checks; each passes, fails, or cannot be decided here. **holds**: every decided check
  passes; **partly**: some do; **does not hold here**: none; **cannot be tested here**: none could be decided.
- **The gold evaluator** decides a check only when its held-out accuracy's whole 95% interval lies above 0.5;
  otherwise its checks cannot be decided.
- **Statistics** (held-out accuracy, margin, chosen drift A_w − A_ref,w against the starting model): per-seed
  differences between two variants (same seed, same pairs), mean with a 95% Student-t interval over seeds;
  "above 0" means the whole interval lies above 0; "not below −δ" means the whole interval lies at or above −δ.
- **Win rates**: per prompt, 1 when the gold reward model scores the first model's greedy answer higher, 0.5
  when equal, 0 when lower, averaged over seeds (paired by seed); the rate is the mean over prompts with a 95%
  percentile bootstrap interval; it "beats" when the interval lies above 0.5. The `longer` judge's rate is
  computed the same way from the lengths and shown beside, never used in a verdict.
- **Gradients**: exact numbers, no interval. MLE: w_good > 0 and |w_bad| ≤ 1e-12 at every p. UL: w_bad rises with
  p and w_bad(0.999) > 5·w_bad(0.99). ExMATE: every w_bad finite and w_bad(0.999) < 1.5·w_bad(0.99). DPO: w
  non-increasing in the margin h and w(+50) < 0.1·w(0).
"""
