"""The held-out metrics' one table: every metric the evaluation produces is in it, in one order."""

from __future__ import annotations

import torch

from preftune.evaluation import summarise
from preftune.evaluation.names import CONSOLE_METRICS, DESCRIPTIONS, METRIC_ORDER, METRICS, SUMMARY_METRICS, ordered
from preftune.objectives import PairRecord, SequenceLogProbs, pair_metrics


def _scores(*values: float) -> SequenceLogProbs:
    return SequenceLogProbs(torch.tensor(values), torch.full((len(values),), 4.0))


def test_every_metric_of_a_full_pair_record_is_named_in_order() -> None:
    record = PairRecord(_scores(-3.0, -5.0), _scores(-6.0, -4.0), _scores(-4.0, -4.0), _scores(-5.0, -5.0))
    per_pair = pair_metrics(record)
    per_pair["count/chosen"] = record.chosen.count
    produced = set(summarise(per_pair))
    assert produced == set(METRIC_ORDER)
    assert ordered(produced) == list(METRIC_ORDER)


def test_ordered_puts_unknown_names_last_and_sorted() -> None:
    assert ordered(["zeta", "margin", "alpha", "accuracy", "margin"]) == ["accuracy", "margin", "alpha", "zeta"]


def test_the_views_follow_the_table() -> None:
    assert len(set(METRIC_ORDER)) == len(METRICS)
    assert CONSOLE_METRICS == ("accuracy", "margin", "chosen_drift")
    assert [n for n in METRIC_ORDER if n in SUMMARY_METRICS] == list(SUMMARY_METRICS)
    assert "logps/chosen" not in SUMMARY_METRICS and all(DESCRIPTIONS[n] for n in METRIC_ORDER)
