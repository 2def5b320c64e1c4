"""Gradient analysis of P1 (Tuan & Wang 2024): what each objective does to each token (docs/methods.md §3).

    >>> from preftune.analysis import token_weights, write_gradient_report
    >>> w = token_weights("dpo + exmate", record)     # record: a PairRecord with per-token log-probs
    >>> w.good, w.bad                                  # [B, T_w], [B, T_l]
    >>> write_gradient_report(["mle", "ul", "exmate", "dpo", "dpo+exmate"], "out/gradients")

Imports nothing of preftune beyond :mod:`preftune.objectives` and :mod:`preftune.errors`: the
analysis works on log-probs, never on a model.
"""

from preftune.analysis.report import GradientReport, write_gradient_report
from preftune.analysis.similarity import shared_prefix_mask, shared_token_weight
from preftune.analysis.weights import TokenWeights, token_weights

__all__ = [
    "GradientReport",
    "TokenWeights",
    "shared_prefix_mask",
    "shared_token_weight",
    "token_weights",
    "write_gradient_report",
]
