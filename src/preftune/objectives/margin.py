"""Terms built on the implicit-reward margin h (direct alignment).

h = (S_w - S_ref,w) - (S_l - S_ref,l), or with P2's averaging operator
h = (A_w - A_ref,w) - (A_l - A_ref,l) for the policy and the reference alike
(Grinsztajn et al. 2024, eq. 5). Averaging only the policy would be SimPO, not this.

``divergence`` replaces each log-ratio r by ψ(r) = f'(π/π_ref) of another f-divergence to the
reference (f-DPO, Wang et al. 2024, Table 1): only in the difference of chosen and rejected does the
partition function cancel, so only terms of h offer it. The ratio terms' settings (``ld_alpha``,
``wpo``) are in ratios.py; docs/methods.md §2.6.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from preftune.errors import SpecError
from preftune.objectives.params import param
from preftune.objectives.ratios import RatioTerm
from preftune.objectives.records import PairRecord, as_float, require

# exp of at most this in ψ (TRL clamps the α-divergence's exponent here; forward KL too, [our choice])
EXPONENT_CEILING = 80.0


def margin(record: PairRecord, average: bool, term: str = "margin") -> Tensor:
    """``[B]`` h, the difference of policy-to-reference log-ratios of chosen and rejected."""
    require(record.rejected, "rejected responses", term)
    require(record.ref_chosen, "reference log-probs of chosen responses", term)
    require(record.ref_rejected, "reference log-probs of rejected responses", term)
    assert record.rejected is not None and record.ref_chosen is not None and record.ref_rejected is not None
    chosen_ratio = as_float(record.chosen.score(average)) - as_float(record.ref_chosen.score(average))
    rejected_ratio = as_float(record.rejected.score(average)) - as_float(record.ref_rejected.score(average))
    return chosen_ratio - rejected_ratio


def f_prime(r: Tensor, divergence: str, alpha: float) -> Tensor:
    """ψ(r) = f'(u) at u = exp(r), r a log-ratio log π/π_ref (any shape).

    reverse_kl: log u; forward_kl: 1 - 1/u; js: log(2u/(1+u)); alpha: (u^(α-1) - 1)/(α-1), TRL's
    parameterisation (the paper's α is 1 - this α; docs/methods.md §2.6).
    """
    if divergence == "forward_kl":
        return -torch.expm1((-r).clamp(max=EXPONENT_CEILING))
    if divergence == "js":
        return math.log(2.0) + F.logsigmoid(r)
    if divergence == "alpha":
        return torch.expm1(((alpha - 1.0) * r).clamp(max=EXPONENT_CEILING)) / (alpha - 1.0)
    return r


@dataclass(frozen=True)
class MarginTerm(RatioTerm):
    """Base of the margin terms: β > 0, the averaging switch, the divergence, ``ld_alpha`` and ``wpo``."""

    divergence: Literal["reverse_kl", "forward_kl", "js", "alpha"] = "reverse_kl"
    divergence_alpha: float = param(0.5, gt=0, lt=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.divergence != "alpha" and self.divergence_alpha != 0.5:
            raise SpecError(f"{self.name}: divergence_alpha is read only with divergence='alpha'")

    def h(self, record: PairRecord) -> Tensor:
        """``[B]`` h = ψ(r_w) - ψ(r_l), each divided by its length with ``average`` (after ψ, as TRL does)."""
        if self.divergence == "reverse_kl" and self.ld_alpha == 1.0:
            return margin(record, self.average, self.name)
        s_w, s_l, ref_w, ref_l = self.scores(record)
        assert record.rejected is not None
        psi_w = f_prime(s_w - ref_w, self.divergence, self.divergence_alpha)
        psi_l = f_prime(s_l - ref_l, self.divergence, self.divergence_alpha)
        return self.per_token(psi_w, record.chosen) - self.per_token(psi_l, record.rejected)


@dataclass(frozen=True)
class DPO(MarginTerm):
    """``dpo``: -log σ(β·h) (Rafailov et al. 2023, eq. 7).

    With ``label_smoothing`` ε (conservative DPO, Mitchell 2023):
    -(1-ε)·log σ(β·h) - ε·log σ(-β·h), which assumes labels are flipped with probability ε.
    w_good = w_bad = β·σ(-β·h) on every token of both responses (ε = 0).
    """

    name: ClassVar[str] = "dpo"
    label_smoothing: float = param(0.0, ge=0, lt=0.5)

    def pair_loss(self, record: PairRecord) -> Tensor:
        logits = self.beta * self.h(record)
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

    def pair_loss(self, record: PairRecord) -> Tensor:
        return (self.h(record) - 1.0 / (2.0 * self.beta)) ** 2


@dataclass(frozen=True)
class Hinge(MarginTerm):
    """``hinge``: max(0, 1 - β·h) (SLiC, Zhao et al. 2023; RSO, Liu et al. 2023)."""

    name: ClassVar[str] = "hinge"

    def pair_loss(self, record: PairRecord) -> Tensor:
        return F.relu(1.0 - self.beta * self.h(record))
