"""Evaluation: statistical metrics on held-out pairs (docs/methods.md §6); generative metrics later."""

from preftune.evaluation.statistical import MetricSummary, summarise

__all__ = ["MetricSummary", "summarise"]
