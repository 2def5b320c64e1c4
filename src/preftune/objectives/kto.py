"""KTO: Kahneman-Tversky optimisation, each response judged on its own (Ethayarajh et al. 2024).

A desirable response y_w gains when its implied reward r_w = S(y_w) - S_ref(y_w) rises above a
reference point z0, an undesirable one y_l when r_l falls below it; neither is compared with the
other, so good and bad examples may answer different prompts (``data.bad``). z0 estimates
KL(π_θ ‖ π_ref) from *mismatched* pairs: each prompt x_i of a batch followed by the response of
another example, y'_i = y_{i-1} (the batch and the trainer build and score them, and average the
estimate over processes; the record carries it as ``kl_estimate``). As in the paper, z0 is a
constant (no gradient flows through it) clamped at 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from preftune.objectives.base import Term
from preftune.objectives.params import param
from preftune.objectives.records import PairRecord, as_float, require


@dataclass(frozen=True)
class KTO(Term):
    """``kto``: ½·[λ_D·σ(-β·(r_w - z0)) + λ_U·σ(-β·(z0 - r_l))] per example ``[B]``
    (Ethayarajh et al. 2024, eq. 8, with 1 - σ(x) = σ(-x)).

    r = S - S_ref (summed log-ratios, as the paper and TRL); z0 = max(0, ``record.kl_estimate``),
    detached. λ_D = ``desirable_weight``, λ_U = ``undesirable_weight``. The ½ makes the mean over B
    examples (one desirable and one undesirable response each) the mean over the 2B responses, as
    TRL's ``KTOTrainer`` averages its unpaired batch.
    """

    name: ClassVar[str] = "kto"
    needs_rejected: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True
    needs_mismatched: ClassVar[bool] = True
    fits_unpaired: ClassVar[bool] = True
    beta: float = param(0.1, gt=0)
    desirable_weight: float = param(1.0, ge=0)
    undesirable_weight: float = param(1.0, ge=0)

    def loss(self, record: PairRecord) -> Tensor:
        require(record.rejected, "undesirable (rejected) responses", self.name)
        require(record.ref_chosen, "reference log-probs of desirable responses", self.name)
        require(record.ref_rejected, "reference log-probs of undesirable responses", self.name)
        require(record.kl_estimate, "the KL estimate of the batch's mismatched pairs (kl_estimate)", self.name)
        assert record.rejected is not None and record.ref_chosen is not None and record.ref_rejected is not None
        assert record.kl_estimate is not None
        z0 = as_float(record.kl_estimate).detach().reshape(()).clamp(min=0)
        chosen_ratio = as_float(record.chosen.sum) - as_float(record.ref_chosen.sum)
        rejected_ratio = as_float(record.rejected.sum) - as_float(record.ref_rejected.sum)
        desirable = torch.sigmoid(-self.beta * (chosen_ratio - z0))
        undesirable = torch.sigmoid(-self.beta * (z0 - rejected_ratio))
        return 0.5 * (self.desirable_weight * desirable + self.undesirable_weight * undesirable)
