"""Preference terms without a reference model: SimPO (and AlphaPO's reward), CPO, ORPO (docs/methods.md §2.7).

Each compares the policy's own scores of the chosen and the rejected response; none needs π_ref.
A(y) = S(y)/n is the per-token mean log-likelihood.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from preftune.objectives.base import Term
from preftune.objectives.likelihood import log1m_exp
from preftune.objectives.params import param
from preftune.objectives.records import PairRecord, as_float, require


def _pair(record: PairRecord, term: str, average: bool) -> tuple[Tensor, Tensor]:
    """``[B]`` scores of chosen and rejected: A with ``average``, else S."""
    require(record.rejected, "rejected responses", term)
    assert record.rejected is not None
    return as_float(record.chosen.score(average)), as_float(record.rejected.score(average))


def smoothed_sigmoid(logits: Tensor, label_smoothing: float) -> Tensor:
    """``[B]`` -(1-ε)·log σ(x) - ε·log σ(-x), as softplus (finite for any x)."""
    loss = F.softplus(-logits)
    return (1 - label_smoothing) * loss + label_smoothing * F.softplus(logits) if label_smoothing else loss


@dataclass(frozen=True)
class SimPO(Term):
    """``simpo``: -log σ(β·(r_w - r_l) - γ), r = A, no reference (SimPO, Meng et al. 2024, eq. 6).

    Label smoothing ε as TRL's.

    With ``alpha`` ≠ 0, AlphaPO's reward r = (1 - exp(A)^(-α))/α replaces A (Gupta et al. 2025);
    α → 0 gives A back. ``average=False`` uses S instead of A (then it is CPO's preference term).
    Shapes: ``[B]`` in, ``[B]`` out; no reference.
    """

    name: ClassVar[str] = "simpo"
    needs_rejected: ClassVar[bool] = True
    beta: float = param(2.0, gt=0)
    gamma: float = param(1.0, ge=0)
    label_smoothing: float = param(0.0, ge=0, lt=0.5)
    alpha: float = 0.0
    average: bool = True

    def reward(self, score: Tensor) -> Tensor:
        """AlphaPO's r = (1 - p^(-α))/α with p = exp(score), as -expm1(-α·score)/α; the score when α = 0."""
        return -torch.expm1(-self.alpha * score) / self.alpha if self.alpha else score

    def loss(self, record: PairRecord) -> Tensor:
        chosen, rejected = _pair(record, self.name, self.average)
        logits = self.beta * (self.reward(chosen) - self.reward(rejected)) - self.gamma
        return smoothed_sigmoid(logits, self.label_smoothing)


@dataclass(frozen=True)
class CPO(Term):
    """``cpo``: -log σ(β·(S_w - S_l)) + λ·CE(y_w) (CPO, Xu et al. 2024, eq. 3 and its NLL term).

    λ is TRL's cpo_alpha; label smoothing ε as in TRL. CE(y_w) = -A(y_w) per example; TRL takes one token mean over the
    batch's chosen tokens (equal when the chosen responses have one length). No reference.
    """

    name: ClassVar[str] = "cpo"
    needs_rejected: ClassVar[bool] = True
    beta: float = param(0.1, gt=0)
    label_smoothing: float = param(0.0, ge=0, lt=0.5)
    lam: float = param(1.0, ge=0)

    def loss(self, record: PairRecord) -> Tensor:
        chosen, rejected = _pair(record, self.name, average=False)
        nll = -as_float(record.chosen.mean)
        return smoothed_sigmoid(self.beta * (chosen - rejected), self.label_smoothing) + self.lam * nll


@dataclass(frozen=True)
class ORPO(Term):
    """``orpo``: CE(y_w) - λ·log σ(log odds(y_w) - log odds(y_l)) (ORPO, Hong et al. 2024, eq. 6-7).

    λ is TRL's beta. odds(y) = p/(1-p) with p = exp(A(y)), the per-token mean: log odds = A - log(1 - exp(A)), the
    last factor by :func:`log1m_exp` (finite as A → 0). CE(y_w) = -A(y_w) on the response; TRL's
    also counts the prompt's tokens (docs/methods.md §2.7). No reference.
    """

    name: ClassVar[str] = "orpo"
    needs_rejected: ClassVar[bool] = True
    lam: float = param(0.1, ge=0)

    def loss(self, record: PairRecord) -> Tensor:
        chosen, rejected = _pair(record, self.name, average=True)
        log_odds = (chosen - log1m_exp(chosen)) - (rejected - log1m_exp(rejected))
        return -chosen + self.lam * F.softplus(-log_odds)
