"""The held-out metrics' names, in the one order every report shows them, with what each means.

The values come from :func:`preftune.objectives.pair_metrics` and
:func:`preftune.evaluation.statistical.summarise` (docs/methods.md §6). ``console`` marks the few a
run prints at each held-out evaluation and plots beside the loss; ``summary`` those in
``summary.md``'s before/after table. A metric not listed here is shown after these, by name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One held-out metric: its name, a short description, and where it is shown."""

    name: str
    description: str
    meaning: str  # one line for a reader of summary.md (docs/methods.md §6.1 has the definitions)
    console: bool = False  # printed at each held-out evaluation, and plotted in curves.png
    summary: bool = True  # a row of summary.md's before/after table


METRICS: tuple[Metric, ...] = (
    Metric(
        "accuracy",
        "preference accuracy (h > 0)",
        "share of pairs whose margin h favours the chosen response (ties ½); 0.5 before training",
        console=True,
    ),
    Metric(
        "margin",
        "margin h",
        "h = log-ratio to the reference of the chosen response minus the rejected's (the objective's β and averaging)",
        console=True,
    ),
    Metric(
        "likelihood_accuracy",
        "likelihood accuracy (A_w > A_l)",
        "share of pairs where the policy gives the chosen response the higher mean token log-prob, no reference",
    ),
    Metric(
        "chosen_drift",
        "chosen drift A_w − A_ref,w",
        "how far the chosen response's mean token log-prob moved from the reference's (< 0: pushed down)",
        console=True,
    ),
    Metric(
        "rewards/chosen",
        "chosen reward: β × log-ratio to the reference",
        "DPO's implicit reward of the chosen response: β × its log-ratio to the reference",
    ),
    Metric(
        "rewards/rejected",
        "rejected reward: β × log-ratio to the reference",
        "DPO's implicit reward of the rejected response: β × its log-ratio to the reference",
    ),
    Metric(
        "logps/chosen",
        "mean token log-prob of chosen A_w",
        "the policy's mean token log-prob of the chosen responses",
        summary=False,
    ),
    Metric(
        "logps/rejected",
        "mean token log-prob of rejected A_l",
        "the policy's mean token log-prob of the rejected responses",
        summary=False,
    ),
    Metric(
        "chosen_perplexity",
        "perplexity of chosen responses",
        "exp of the chosen responses' mean negative log-likelihood per token under the policy",
    ),
)

METRIC_ORDER: tuple[str, ...] = tuple(m.name for m in METRICS)
CONSOLE_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.console)
SUMMARY_METRICS: tuple[str, ...] = tuple(m.name for m in METRICS if m.summary)
DESCRIPTIONS: dict[str, str] = {m.name: m.description for m in METRICS}
MEANINGS: dict[str, str] = {m.name: m.meaning for m in METRICS}


def ordered(names: Iterable[str]) -> list[str]:
    """``names`` in :data:`METRIC_ORDER`, any others after them, sorted; each once."""
    given = set(names)
    return [n for n in METRIC_ORDER if n in given] + sorted(given - set(METRIC_ORDER))
