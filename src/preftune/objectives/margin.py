"""Terms built on the implicit-reward margin h (direct alignment).

h = (S_w - S_ref,w) - (S_l - S_ref,l), or with P2's averaging operator
h = (A_w - A_ref,w) - (A_l - A_ref,l) for the policy and the reference alike
(Grinsztajn et al. 2024, eq. 5). Averaging only the policy would be SimPO, not this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from preftune.objectives.base import Term
from preftune.objectives.params import param
from preftune.objectives.records import PairRecord, as_float, require


def margin(record: PairRecord, average: bool, term: str = "margin") -> Tensor:
    """``[B]`` h, the difference of policy-to-reference log-ratios of chosen and rejected."""
    require(record.rejected, "rejected responses", term)
    require(record.ref_chosen, "reference log-probs of chosen responses", term)
    require(record.ref_rejected, "reference log-probs of rejected responses", term)
    assert record.rejected is not None and record.ref_chosen is not None and record.ref_rejected is not None
    chosen_ratio = as_float(record.chosen.score(average)) - as_float(record.ref_chosen.score(average))
    rejected_ratio = as_float(record.rejected.score(average)) - as_float(record.ref_rejected.score(average))
    return chosen_ratio - rejected_ratio


@dataclass(frozen=True)
class MarginTerm(Term):
    """Base of the margin terms: β > 0 and the averaging switch."""

    needs_rejected: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True
    builds_margin: ClassVar[bool] = True
    beta: float = param(0.1, gt=0)
    average: bool = False


@dataclass(frozen=True)
class DPO(MarginTerm):
    """``dpo``: -log σ(β·h) (Rafailov et al. 2023, eq. 7).

    With ``label_smoothing`` ε (conservative DPO, Mitchell 2023):
    -(1-ε)·log σ(β·h) - ε·log σ(-β·h), which assumes labels are flipped with probability ε.
    w_good = w_bad = β·σ(-β·h) on every token of both responses (ε = 0).
    """

    name: ClassVar[str] = "dpo"
    label_smoothing: float = param(0.0, ge=0, lt=0.5)

    def loss(self, record: PairRecord) -> Tensor:
        logits = self.beta * margin(record, self.average, self.name)
        # softplus(-x) = -log σ(x), exact and finite for any x.
        loss = F.softplus(-logits)
        if self.label_smoothing:
            loss = (1 - self.label_smoothing) * loss + self.label_smoothing * F.softplus(logits)
        return loss


@dataclass(frozen=True)
class IPO(MarginTerm):
    """``ipo``: (h - 1/(2τ))² with τ = β (Azar et al. 2023, eq. 17).

    Averaged by default, as the IPO authors intend (docs/methods.md §2, our choice).
    """

    name: ClassVar[str] = "ipo"
    average: bool = True

    def loss(self, record: PairRecord) -> Tensor:
        return (margin(record, self.average, self.name) - 1.0 / (2.0 * self.beta)) ** 2


@dataclass(frozen=True)
class Hinge(MarginTerm):
    """``hinge``: max(0, 1 - β·h) (SLiC, Zhao et al. 2023; RSO, Liu et al. 2023)."""

    name: ClassVar[str] = "hinge"

    def loss(self, record: PairRecord) -> Tensor:
        return F.relu(1.0 - self.beta * margin(record, self.average, self.name))
