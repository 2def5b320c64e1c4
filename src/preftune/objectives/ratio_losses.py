"""TRL's other losses on log-ratios to the reference, as terms (docs/methods.md §2.6).

r_w, r_l are the log-ratios log π/π_ref of the chosen and the rejected response (``[B]`` each), h =
r_w - r_l the margin and x = β·h. Terms of h alone (margin terms) accept every setting of
:class:`MarginTerm` (``divergence``, ``ld_alpha``, ``wpo``, ``average``); terms of r_w and r_l apart
accept ``ld_alpha``, ``wpo`` and ``average``. The TRL ``loss_type`` each one matches is named.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from preftune.objectives.margin import DPO, MarginTerm
from preftune.objectives.params import param
from preftune.objectives.ratios import RatioTerm
from preftune.objectives.records import PairRecord
from preftune.objectives.reference_free import smoothed_sigmoid


@dataclass(frozen=True)
class SigmoidNorm(DPO):
    """``sigmoid_norm``: ``dpo`` with per-token means, -log σ(β·h_avg) (TRL's ``sigmoid_norm``)."""

    name: ClassVar[str] = "sigmoid_norm"
    average: bool = True


@dataclass(frozen=True)
class Robust(MarginTerm):
    """``robust``: [(1-ε)·(-log σ(x)) - ε·(-log σ(-x))]/(1-2ε) (rDPO, Chowdhury et al. 2024, eq. 8).

    Unbiased under labels flipped with probability ε (TRL's ``robust``, ε its label_smoothing); unbounded below
    as x grows, like the paper's.
    """

    name: ClassVar[str] = "robust"
    label_smoothing: float = param(0.1, ge=0, lt=0.5)

    def pair_loss(self, record: PairRecord) -> Tensor:
        x, eps = self.beta * self.h(record), self.label_smoothing
        return ((1 - eps) * F.softplus(-x) - eps * F.softplus(x)) / (1 - 2 * eps)


@dataclass(frozen=True)
class EXOPair(MarginTerm):
    """``exo_pair``: KL(q ‖ p), q = (σ(x), σ(-x)), p = (1-ε, ε) (EXO, Ji et al. 2024, eq. 16, K = 2).

    TRL's ``exo_pair``, ε its label_smoothing (> 0; the paper suggests 1e-3).
    """

    name: ClassVar[str] = "exo_pair"
    label_smoothing: float = param(1e-3, gt=0, lt=0.5)

    def pair_loss(self, record: PairRecord) -> Tensor:
        x, eps = self.beta * self.h(record), self.label_smoothing
        q_w, q_l = torch.sigmoid(x), torch.sigmoid(-x)
        return q_w * (F.logsigmoid(x) - math.log1p(-eps)) + q_l * (F.logsigmoid(-x) - math.log(eps))


@dataclass(frozen=True)
class DiscoPOP(MarginTerm):
    """``discopop``: (1 - σ(x/τ))·(-log σ(x)) + σ(x/τ)·exp(-x) (DiscoPOP, Chris Lu et al. 2024, eq. 5).

    TRL's ``discopop``, τ its discopop_tau. The exponential part is computed as exp(-x + log σ(x/τ)),
    finite for τ ≤ 1 (for τ > 1 the loss itself grows without bound as x → -∞).
    """

    name: ClassVar[str] = "discopop"
    tau: float = param(0.05, gt=0, le=1)

    def pair_loss(self, record: PairRecord) -> Tensor:
        x = self.beta * self.h(record)
        mix = torch.sigmoid(x / self.tau)
        return (1 - mix) * F.softplus(-x) + torch.exp(F.logsigmoid(x / self.tau) - x)


@dataclass(frozen=True)
class NCAPair(RatioTerm):
    """``nca_pair``: -log σ(βr_w) - ½·log σ(-βr_w) - ½·log σ(-βr_l) (NCA, Chen et al. 2024).

    TRL's ``nca_pair``. Each response is scored on its own, so unpaired good and bad sets fit.
    """

    fits_unpaired: ClassVar[bool] = True  # reads r_w and r_l each on its own

    name: ClassVar[str] = "nca_pair"

    def pair_loss(self, record: PairRecord) -> Tensor:
        r_w, r_l = self.log_ratios(record)
        return F.softplus(-self.beta * r_w) + 0.5 * F.softplus(self.beta * r_w) + 0.5 * F.softplus(self.beta * r_l)


@dataclass(frozen=True)
class BCOPair(RatioTerm):
    """``bco_pair``: -log σ(βr_w) - log σ(-βr_l), each response classified alone (BCO, Jung et al. 2024).

    As TRL's ``bco_pair``, without the paper's running reward shift δ. Unpaired sets fit.
    """

    fits_unpaired: ClassVar[bool] = True  # reads r_w and r_l each on its own

    name: ClassVar[str] = "bco_pair"

    def pair_loss(self, record: PairRecord) -> Tensor:
        r_w, r_l = self.log_ratios(record)
        return F.softplus(-self.beta * r_w) + F.softplus(self.beta * r_l)


@dataclass(frozen=True)
class SPPOHard(RatioTerm):
    """``sppo_hard``: (r_w - 1/(2β))² + (r_l + 1/(2β))² (SPPO, Wu et al. 2024, eq. 4.7, hard labels).

    Win probabilities 1 and 0 and η = 1/β, as TRL's ``sppo_hard``. Unpaired sets fit.
    """

    fits_unpaired: ClassVar[bool] = True  # reads r_w and r_l each on its own

    name: ClassVar[str] = "sppo_hard"

    def pair_loss(self, record: PairRecord) -> Tensor:
        r_w, r_l = self.log_ratios(record)
        return (r_w - 0.5 / self.beta) ** 2 + (r_l + 0.5 / self.beta) ** 2


@dataclass(frozen=True)
class APOZero(RatioTerm):
    """``apo_zero``: σ(-βr_w) + σ(βr_l), raise the chosen, lower the rejected (APO, D'Oosterlinck 2024, eq. 7).

    TRL's ``apo_zero``: for chosen responses better than the policy's own. Unpaired sets fit.
    """

    fits_unpaired: ClassVar[bool] = True  # reads r_w and r_l each on its own

    name: ClassVar[str] = "apo_zero"

    def pair_loss(self, record: PairRecord) -> Tensor:
        r_w, r_l = self.log_ratios(record)
        return torch.sigmoid(-self.beta * r_w) + torch.sigmoid(self.beta * r_l)


@dataclass(frozen=True)
class APODown(RatioTerm):
    """``apo_down``: σ(βr_w) + σ(-β(r_w - r_l)), lower both, the rejected more (APO, eq. 8).

    TRL's ``apo_down``: for chosen responses worse than the policy's own.
    """

    name: ClassVar[str] = "apo_down"

    def pair_loss(self, record: PairRecord) -> Tensor:
        r_w, r_l = self.log_ratios(record)
        return torch.sigmoid(self.beta * r_w) + torch.sigmoid(-self.beta * (r_w - r_l))


@dataclass(frozen=True)
class AOT(RatioTerm):
    """``aot``: -log σ(β·δ_k), δ = sorted(S_w - S_l) - sorted(S_ref,w - S_ref,l) over the batch (AOT, paired).

    Melnyk et al. 2024; TRL's ``aot``, with label smoothing ε as TRL's. Batch-sorted: value k is the k-th
    quantile's, not example k's, and it depends on the whole batch (its micro-batch under accumulation), so
    only the mean means anything. No ``wpo``.
    """

    name: ClassVar[str] = "aot"
    sorts_batch: ClassVar[bool] = True
    label_smoothing: float = param(0.0, ge=0, lt=0.5)

    def pair_loss(self, record: PairRecord) -> Tensor:
        s_w, s_l, ref_w, ref_l = self.scores(record)
        assert record.rejected is not None
        policy = self.per_token(s_w, record.chosen) - self.per_token(s_l, record.rejected)
        ref = self.per_token(ref_w, record.chosen) - self.per_token(ref_l, record.rejected)
        delta = torch.sort(policy).values - torch.sort(ref).values
        return smoothed_sigmoid(self.beta * delta, self.label_smoothing)


@dataclass(frozen=True)
class AOTUnpaired(RatioTerm):
    """``aot_unpaired``: -log σ(β·δ_k), δ = sorted(r_w) - sorted(r_l) over the batch (AOT, unpaired).

    TRL's ``aot_unpaired`` (``aot_pair`` in earlier TRL releases). Batch-sorted as ``aot``; unpaired sets fit.
    """

    fits_unpaired: ClassVar[bool] = True  # reads r_w and r_l each on its own

    name: ClassVar[str] = "aot_unpaired"
    sorts_batch: ClassVar[bool] = True
    label_smoothing: float = param(0.0, ge=0, lt=0.5)

    def pair_loss(self, record: PairRecord) -> Tensor:
        r_w, r_l = self.log_ratios(record)
        delta = torch.sort(r_w).values - torch.sort(r_l).values
        return smoothed_sigmoid(self.beta * delta, self.label_smoothing)
