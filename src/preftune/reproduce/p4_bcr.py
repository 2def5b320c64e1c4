"""P4's claim (c) (Chen et al. 2024, *Towards Improved Preference Optimization Pipeline: from Data Generation
to Budget-Controlled Regularization*; docs/methods.md §2): budget-controlled regularisation against plain DPO.

:func:`run_study` trains ``dpo``, ``dpo + bcr(delta=δ)`` for every budget δ of a grid (λ = 1, δ in nats per
token), and ``dpo + dpop`` (the same penalty with δ = 0: DPO-Positive), from the same start on the same pairs
with the same seeds as P1's runs at the same scale (:func:`preftune.reproduce.p1_runs.run_all` on P1's training
settings), with the trainer's held-out evaluation every ``eval.every`` steps. Per run it keeps the held-out
statistics at every evaluation (the stage record's ``evals``: chosen drift A_w − A_ref,w against the starting
model, preference accuracy) and the greedy answers to the first held-out prompts, which the gold reward model
scores against the starting model's answers.

:func:`bcr_section` writes the claim's section: the end statistics with the win rates against the start (gold
and ``longer``, mean lengths beside: :func:`preftune.reproduce.p1_report.results_table`), each variant's
contrast with ``dpo`` paired by seed, the curves over training (a table and :data:`FIGURE`), and the verdict
of :func:`preftune.reproduce.rules.bcr_checks` and :func:`~preftune.reproduce.rules.bcr_verdict`, whose rule
(:func:`~preftune.reproduce.rules.bcr_rule`) the section states.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure

from preftune.reproduce.answers import run_rates
from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.p1_report import per_seed, results_table
from preftune.reproduce.p1_runs import Run, run_all
from preftune.reproduce.plots import curves_figure
from preftune.reproduce.report import ClaimSection, markdown_table
from preftune.reproduce.rules import Check, bcr_checks, bcr_reason, bcr_verdict, paired
from preftune.reproduce.verdicts import mean_interval

if TYPE_CHECKING:
    from preftune.reproduce.p1 import P1Scale

Say = Callable[[str], Any]
BASELINE = "dpo"
DPOP = "dpo + dpop"
CURVE_METRICS = ("chosen_drift", "accuracy")
LABELS = {"chosen_drift": "held-out chosen drift A_w − A_ref,w (nats/token)", "accuracy": "held-out accuracy"}
FIGURE = "p4_bcr_curves.png"
TITLE = "(c) Budget-controlled regularisation keeps the chosen likelihood up"
BCR_CLAIM = (
    "Budget-controlled regularisation (DPO plus a penalty when the chosen response's log-likelihood falls more "
    "than a budget δ below the reference's) keeps the chosen likelihood from falling while preference accuracy "
    "holds, unlike plain DPO (and DPOP's stricter version)."
)
Curves = dict[str, dict[str, list[tuple[float, float]]]]
"""``variant -> metric -> [(step, mean over seeds)]``."""


def bcr_variant(delta: float) -> str:
    """The objective expression of BCR at budget ``delta``: ``dpo + bcr(delta=0.05)``."""
    return f"dpo + bcr(delta={delta:g})"


@dataclass(frozen=True)
class BcrStudy:
    """How big (c) is.

    Attributes:
        training: the runs' settings by :class:`~preftune.run.config.RunConfig` section (P1's at the same scale,
            with ``eval.every`` set).
        deltas: the grid of budgets δ (nats per token) of ``dpo + bcr(delta=δ)``.
        seeds: the optimiser seeds every variant trains with.
        prompts: held-out prompts answered by every model; max_new_tokens: the answers' length limit.
        drift_margin: the rule's margin on the chosen drift (nats per token).
        accuracy_margin: the rule's margin on the held-out accuracy.
    """

    training: dict[str, dict[str, Any]]
    deltas: tuple[float, ...]
    seeds: tuple[int, ...]
    prompts: int
    max_new_tokens: int
    drift_margin: float = 0.05
    accuracy_margin: float = 0.05

    @property
    def variants(self) -> tuple[str, ...]:
        """``dpo``, BCR at every δ, then ``dpo + dpop``."""
        return (BASELINE, *(bcr_variant(d) for d in self.deltas), DPOP)


def study_of(
    p1: P1Scale, deltas: Sequence[float], seeds: Sequence[int], eval_every: int, max_steps: int | None = None
) -> BcrStudy:
    """(c) on P1's runs at a scale (``p1``: its training settings, prompts, answer length and drift margin),
    evaluated every ``eval_every`` steps (``max_steps``: when set, instead of P1's)."""
    training = copy.deepcopy(p1.training)
    training["eval"] = {**training.get("eval", {}), "every": eval_every}
    if max_steps is not None:
        training["optim"] = {**training["optim"], "max_steps": max_steps}
    return BcrStudy(training, tuple(deltas), tuple(seeds), p1.prompts, p1.max_new_tokens, drift_margin=p1.margin)


def run_study(study: BcrStudy, prompts: Sequence[Any], say: Say) -> dict[str, list[Run]]:
    """Every variant at every seed: ``variant -> [Run per seed]``, each with its held-out curve."""
    return run_all(study.training, study.seeds, prompts, study.max_new_tokens, say, study.variants, label="P4 (c)")


def mean_curves(runs: Mapping[str, Sequence[Run]]) -> Curves:
    """Per variant and metric of :data:`CURVE_METRICS`, the mean over seeds at every step all seeds evaluated."""
    curves: Curves = {}
    for variant, seeds in runs.items():
        by_step = [{point["step"]: point for point in run.curve} for run in seeds]
        steps = sorted(set.intersection(*(set(b) for b in by_step))) if by_step else []
        curves[variant] = {
            metric: [(step, sum(b[step].get(metric, math.nan) for b in by_step) / len(by_step)) for step in steps]
            for metric in CURVE_METRICS
        }
    return curves


def curve_figure(curves: Curves) -> Figure:
    """Chosen drift and accuracy against the step, one line per variant (mean over seeds)."""
    title = "P4 (c): held-out chosen drift and accuracy over training (mean over seeds)"
    return curves_figure(curves, title, LABELS)


def curve_table(curves: Curves) -> str:
    """Per variant and evaluated step: ``chosen drift / accuracy`` (means over seeds)."""
    steps = sorted({step for c in curves.values() for step, _ in c["chosen_drift"]})
    rows = []
    for variant, curve in curves.items():
        drift, accuracy = dict(curve["chosen_drift"]), dict(curve["accuracy"])
        rows.append((variant, *(f"{drift[s]:+.3f} / {accuracy[s]:.3f}" if s in drift else "–" for s in steps)))
    return markdown_table(["variant", *(f"step {s:g}" for s in steps)], rows)


def contrast_table(values: Mapping[str, Mapping[str, Sequence[float]]], checks: Mapping[str, Check]) -> str:
    """Each variant against ``dpo``, paired by seed: chosen drift and accuracy differences, and the outcome of the
    rule's check (``checks``: by variant; ``dpo + dpop`` has none)."""
    outcome = {True: "supports", False: "goes against", None: "undecided"}
    decided = {variant: outcome[check.passed] for variant, check in checks.items()}
    rows = []
    for variant in values:
        if variant == BASELINE:
            continue
        drift = paired(values[variant]["chosen_drift"], values[BASELINE]["chosen_drift"])
        accuracy = paired(values[variant]["accuracy"], values[BASELINE]["accuracy"])
        rows.append((variant, drift.text(3), accuracy.text(3), decided.get(variant, "shown, not in the rule")))
    header = ["variant", "chosen drift − dpo's (nats/token)", "accuracy − dpo's", "rule"]
    return markdown_table(header, rows)


def _setup(study: BcrStudy, gold: GoldEvaluator) -> str:
    training = study.training
    data, optim = training["data"], training["optim"]
    return (
        f"`dpo`, `dpo + bcr(delta=δ)` for δ ∈ {{{', '.join(f'{d:g}' for d in study.deltas)}}} (λ = 1, δ in nats per "
        f"token) and `dpo + dpop` (δ = 0), trained from the same start on the same pairs with seeds "
        f"{list(study.seeds)}: P1's runs at this scale (`{training['model']['name']}`, "
        f"{data.get('train_size') or 'all'} training pairs, {optim['max_steps']} steps of {optim['batch_size']} "
        f"pairs at lr {optim['lr']}). The trainer evaluates its {data['eval_size']} held-out pairs against the "
        f"starting model before the first step, every {training['eval']['every']} steps and at the end. End "
        "statistics: mean [95% Student-t interval over seeds]. Win rates: against the starting model's greedy "
        f"answers to the first {study.prompts} held-out prompts (at most {study.max_new_tokens} new tokens), "
        "per-prompt means over seeds, bootstrapped over prompts; the gold evaluator's (held-out accuracy "
        f"{gold.accuracy.text()}) are shown with the `longer` judge's and the lengths beside, not used in the "
        "verdict: the claim is about the chosen likelihood and the accuracy."
    )


def _rule_summary(study: BcrStudy) -> str:
    """The rule in one paragraph; in full, :func:`~preftune.reproduce.rules.bcr_rule`, in the report's appendix."""
    return (
        f"**The rule** (in full under *How the verdicts are decided*). A budget δ supports the claim when, paired by "
        f"seed, the end chosen drift of `dpo + bcr(δ)` lies above `dpo`'s by more than {study.drift_margin:g} "
        f"nats/token and its accuracy is not below `dpo`'s by more than {study.accuracy_margin:g} (whole 95% "
        "intervals); it goes against it when the drift is shown not to rise by more than that margin, or the "
        "accuracy shown to fall by more than its margin; no δ is decided unless `dpo`'s own chosen drift lies below "
        f"−{study.drift_margin:g}. **holds**: some δ supports; **does not hold here**: every δ goes against; "
        "**inconclusive**: otherwise."
    )


def bcr_section(
    study: BcrStudy,
    runs: Mapping[str, Sequence[Run]],
    scores: Mapping[str, Any],
    start: list[str],
    gold: GoldEvaluator,
    figures: tuple[str, ...],
) -> ClaimSection:
    """(c): the runs' end statistics and win rates, contrasts with ``dpo``, curves, and the verdict."""
    values = per_seed(runs)
    variants = [bcr_variant(d) for d in study.deltas]
    checks = bcr_checks(values, variants, study.drift_margin, study.accuracy_margin, BASELINE)
    curves = mean_curves(runs)
    measured = "\n\n".join(
        [
            _setup(study, gold),
            results_table(runs, scores, start),
            "Each variant against `dpo` at the end of training, paired by seed (95% Student-t over seeds):",
            contrast_table(values, dict(zip(variants, checks, strict=True))),
            "Over training, held-out chosen drift (nats/token) / accuracy, means over seeds:",
            curve_table(curves),
            _rule_summary(study),
        ]
    )
    rates = {v: run_rates(runs, scores, v, None, start) for v in runs}
    data = {
        "checks": [c.to_json() for c in checks],
        "curves": {v: {m: [list(p) for p in points] for m, points in c.items()} for v, c in curves.items()},
        "win_rates_vs_start": {v: {"gold": g.to_json(), "longer": n.to_json()} for v, (g, n) in rates.items()},
    }
    return ClaimSection("bcr", TITLE, BCR_CLAIM, measured, bcr_verdict(checks), bcr_reason(checks), figures, data)


def _end_metrics(seeds: Sequence[Run]) -> dict[str, Any]:
    """Each end statistic: mean and 95% interval over seeds."""
    return {k: mean_interval([r.metrics.get(k, math.nan) for r in seeds]).to_dict() for k in seeds[0].metrics}


def runs_json(runs: Mapping[str, Sequence[Run]], scores: Mapping[str, Any], start: list[str]) -> dict[str, Any]:
    """The runs' numbers for ``results.json``: per variant the end statistics (mean and interval over seeds) and
    per seed its statistics, curve, answers and their gold scores; the starting model's answers and scores."""
    keys = ("seed", "metrics", "curve", "seconds", "answers")
    per_variant = {
        variant: {
            "metrics": _end_metrics(seeds),
            "per_seed": [
                {**{k: getattr(r, k) for k in keys}, "gold_scores": scores[variant][i]} for i, r in enumerate(seeds)
            ],
        }
        for variant, seeds in runs.items()
        if seeds
    }
    return {"start": {"answers": start, "gold_scores": scores["start"]}, "runs": per_variant}
