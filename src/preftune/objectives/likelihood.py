"""Terms that reward good examples by likelihood and penalise bad ones token by token (P1).

All four start from CE(y_w) = -A(y_w), the token-mean cross-entropy of the chosen response,
and differ in the penalty on the rejected one (docs/methods.md §2, §3):

- ``mle``: no penalty.
- ``ul``: unlikelihood, -(α/n_l) Σ_t log(1 - π(y_l,t)); its weight p/(1-p) is unbounded.
- ``mate``: -λ CE(y_l); unbounded below, so it warns.
- ``exmate``: λ exp(-CE(y_l)); its weight λ exp(A_l)/n_l is bounded by λ/n_l and fades as
  the bad response becomes unlikely.

With ``average=False`` (P2's switch turned off) sums S replace the means A throughout.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from preftune.objectives.base import Term
from preftune.objectives.params import param
from preftune.objectives.records import PairRecord, SequenceLogProbs, as_float, require

# log π is clamped to at most this before log(1 - π) so that π = 1 cannot give log 0.
LOG_PROB_CEILING = -1e-6


def log1m_exp(log_p: Tensor) -> Tensor:
    """log(1 - exp(log_p)) computed as log(-expm1(log_p)), stable for log_p near 0 and -inf; any shape.

    ``log_p`` is clamped to at most :data:`LOG_PROB_CEILING` with a straight-through gradient,
    so the UL weight p/(1-p) stays finite (≈1e6) instead of becoming inf or being cut to 0.
    ``log_p = -inf`` (p = 0) gives exactly 0 with gradient 0, never NaN (docs/methods.md §2.3).
    """
    # The clamp is a `where`, not `log_p - (log_p - clamp).detach()` everywhere: at -inf that arithmetic is
    # -inf - (-inf) = NaN. The unselected branch's NaN never reaches the gradient: where() routes zeros to it.
    above = log_p > LOG_PROB_CEILING
    clamped = torch.where(above, log_p - (log_p - LOG_PROB_CEILING).detach(), log_p)
    return torch.log(-torch.expm1(clamped))


def _chosen_ce(record: PairRecord, average: bool) -> Tensor:
    """``[B]`` CE(y_w) = -A(y_w) (or -S(y_w) without averaging)."""
    return -as_float(record.chosen.score(average))


def _rejected(record: PairRecord, name: str) -> SequenceLogProbs:
    require(record.rejected, "rejected responses", name)
    assert record.rejected is not None
    return record.rejected


@dataclass(frozen=True)
class MLE(Term):
    """``mle``: CE(y_w), maximum likelihood on the good response (P1 baseline; P3 "Pref-FT")."""

    name: ClassVar[str] = "mle"
    fits_unpaired: ClassVar[bool] = True
    average: bool = True

    def loss(self, record: PairRecord) -> Tensor:
        return _chosen_ce(record, self.average)


@dataclass(frozen=True)
class Unlikelihood(Term):
    """``ul``: CE(y_w) + α·(-1/n_l) Σ_t log(1 - π(y_l,t)) (Welleck et al. 2020, sequence form).

    w_bad(t) = α·p/(1-p)/n_l with p = π(y_l,t): unbounded as p -> 1 (docs/methods.md §3). A token with
    p = 0 (log-prob -inf) adds no penalty and no gradient.
    """

    name: ClassVar[str] = "ul"
    needs_rejected: ClassVar[bool] = True
    fits_unpaired: ClassVar[bool] = True
    needs_token_logps: ClassVar[bool] = True
    alpha: float = param(1.0, ge=0)
    average: bool = True

    def loss(self, record: PairRecord) -> Tensor:
        rejected = _rejected(record, self.name)
        require(rejected.tokens, "per-token log-probs of rejected responses", self.name)
        assert rejected.tokens is not None and rejected.mask is not None
        mask = rejected.mask
        # Select, never multiply: padding may hold anything (even -inf or NaN in a caller's own record), and
        # 0·NaN in the backward pass would still be NaN.
        safe = torch.where(mask, as_float(rejected.tokens), -1.0)
        log_not_p = torch.where(mask, log1m_exp(safe), 0.0)
        penalty = -log_not_p.sum(-1)
        if self.average:
            penalty = penalty / rejected.count
        return _chosen_ce(record, self.average) + self.alpha * penalty


@dataclass(frozen=True)
class MATE(Term):
    """``mate``: CE(y_w) - λ·CE(y_l) (P1 author code). Unbounded below: it can diverge.

    A rejected token with log-prob -inf makes the loss -inf (its true value); the gradient stays λ/n_l.
    """

    name: ClassVar[str] = "mate"
    needs_rejected: ClassVar[bool] = True
    fits_unpaired: ClassVar[bool] = True
    lam: float = param(0.05, ge=0)
    average: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam > 0:
            warnings.warn(
                "mate is unbounded below (the penalty -λ·CE(y_l) can fall without limit); exmate is its bounded form",
                stacklevel=3,
            )

    def loss(self, record: PairRecord) -> Tensor:
        rejected = _rejected(record, self.name)
        return _chosen_ce(record, self.average) + self.lam * as_float(rejected.score(self.average))


@dataclass(frozen=True)
class ExMATE(Term):
    """``exmate``: CE(y_w) + λ·exp(-CE(y_l)) (P1, author code's token-mean CE).

    w_bad(t) = λ·exp(A_l)/n_l ≤ λ/n_l: bounded, and it fades as y_l becomes unlikely; a rejected
    token with log-prob -inf gives a penalty of 0 and a weight of 0.
    """

    name: ClassVar[str] = "exmate"
    needs_rejected: ClassVar[bool] = True
    fits_unpaired: ClassVar[bool] = True
    lam: float = param(0.05, ge=0)
    average: bool = True

    def loss(self, record: PairRecord) -> Tensor:
        rejected = _rejected(record, self.name)
        # exp of a log-likelihood (≤ 0) cannot overflow: exp(-CE) straight from the log domain.
        return _chosen_ce(record, self.average) + self.lam * torch.exp(as_float(rejected.score(self.average)))
