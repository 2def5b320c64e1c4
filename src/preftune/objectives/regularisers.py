"""Regularisers of the chosen likelihood against the reference.

``bcr`` (P4, Chen et al. 2024): λ_b·max(0, (A_ref,w - A_w) - δ). DPO lets the chosen
likelihood drift down; BCR lets it fall by at most a budget δ (nats per token) before it
pushes back, linearly. ``dpop`` (DPO-Positive, Pal et al. 2024) is the same with δ = 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor

from preftune.objectives.base import Term
from preftune.objectives.params import param
from preftune.objectives.records import PairRecord, as_float, require


@dataclass(frozen=True)
class BCR(Term):
    """``bcr``: λ_b·max(0, (A_ref,w - A_w) - δ); zero inside the budget, linear outside.

    δ is in nats per token when averaged (default), in nats per sequence with ``average=False``.
    """

    name: ClassVar[str] = "bcr"
    needs_reference: ClassVar[bool] = True
    fits_unpaired: ClassVar[bool] = True
    lam: float = param(1.0, ge=0)
    delta: float = param(0.05, ge=0)
    average: bool = True

    def loss(self, record: PairRecord) -> Tensor:
        require(record.ref_chosen, "reference log-probs of chosen responses", self.name)
        assert record.ref_chosen is not None
        drop = as_float(record.ref_chosen.score(self.average)) - as_float(record.chosen.score(self.average))
        return self.lam * F.relu(drop - self.delta)


@dataclass(frozen=True)
class DPOP(BCR):
    """``dpop``: ``bcr`` with no budget (δ = 0), DPO-Positive's penalty."""

    name: ClassVar[str] = "dpop"
    delta: float = 0.0
