"""Log-ratios to the reference, and the settings every term built on them shares (docs/methods.md §2.6).

A response's log-ratio is r = S - S_ref. Two settings change what S is, for every term that reads
log-ratios (``dpo``, ``ipo``, ``hinge``, ``robust``, ``nca_pair``, ``aot``...):

- ``ld_alpha`` α ∈ [0, 1] (LD-DPO, Liu et al. 2024): the tokens of the longer response beyond the
  shorter one's length count α times, for the policy and the reference alike. 1 (the default) is off.
- ``wpo`` (WPO, Zhou et al. 2024, eq. 2): each pair's loss is weighted by w(y_w)·w(y_l), with
  w(y) = exp(mean_t [log π(y_t) - log Σ_v π(v)²]), a constant (no gradient flows through it).

``average`` (P2's switch) divides by the token count n. Terms of the margin h alone may also
change the divergence to the reference (margin.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from preftune.errors import SpecError
from preftune.objectives.base import Term
from preftune.objectives.params import param
from preftune.objectives.records import PairRecord, SequenceLogProbs, as_float, require

ROLES = ("chosen responses", "rejected responses", "reference log-probs of chosen responses",
         "reference log-probs of rejected responses")  # fmt: skip


def _weighted_sum(s: SequenceLogProbs, shared: Tensor, ld_alpha: float, role: str, term: str) -> Tensor:
    """``[B]`` Σ_t c_t·log π(y_t), c_t = 1 for the first ``shared [B]`` tokens and ``ld_alpha`` after."""
    require(s.tokens, f"per-token log-probs of {role} (ld_alpha < 1)", term)
    assert s.tokens is not None and s.mask is not None
    tokens = as_float(s.tokens)
    position = s.mask.cumsum(-1)  # 1 on the first response token
    weighted = torch.where(position <= shared[..., None], tokens, ld_alpha * tokens)
    return torch.where(s.mask, weighted, 0.0).sum(-1)


def sequence_scores(record: PairRecord, term: str, ld_alpha: float = 1.0) -> tuple[Tensor, ...]:
    """``[B]`` S_w, S_l, S_ref,w, S_ref,l: sums, with LD-DPO's weighting when ``ld_alpha`` < 1."""
    parts = (record.chosen, record.rejected, record.ref_chosen, record.ref_rejected)
    for part, role in zip(parts, ROLES, strict=True):
        require(part, role, term)
    if ld_alpha == 1.0:
        return tuple(as_float(p.sum) for p in parts)  # type: ignore[union-attr]
    assert record.rejected is not None
    shared = torch.minimum(record.chosen.count, record.rejected.count)  # the shorter response's length
    return tuple(_weighted_sum(p, shared, ld_alpha, r, term) for p, r in zip(parts, ROLES, strict=True))  # type: ignore[arg-type]


def wpo_weight(record: PairRecord, term: str) -> Tensor:
    """``[B]`` w(y_w)·w(y_l), w(y) = exp(mean_t [log π(y_t) - log Σ_v π(v)²]), without gradient (WPO eq. 2)."""
    weights = []
    for s, role in ((record.chosen, "chosen"), (record.rejected, "rejected")):
        require(s, f"{role} responses", term)
        assert s is not None
        require(s.collision, f"per-token log Σ_v π(v)² of {role} responses (wpo=True)", term)
        assert s.tokens is not None and s.mask is not None and s.collision is not None
        with torch.no_grad():
            aligned = torch.where(s.mask, as_float(s.tokens) - as_float(s.collision), 0.0)
            weights.append(torch.exp(aligned.sum(-1) / s.count))
    return weights[0] * weights[1]


@dataclass(frozen=True)
class RatioTerm(Term):
    """Base of the terms on log-ratios to the reference: β > 0, ``average``, ``ld_alpha``, ``wpo``.

    A subclass writes ``pair_loss(record) -> [B]``; ``loss`` applies WPO's weight when asked.
    """

    needs_rejected: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True
    builds_margin: ClassVar[bool] = True
    beta: float = param(0.1, gt=0)
    average: bool = False
    ld_alpha: float = param(1.0, ge=0, le=1)
    wpo: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.wpo and self.sorts_batch:
            raise SpecError(f"{self.name}: wpo does not apply, the term sorts the batch so per-pair weights misalign")

    @property
    def needs_token_logps(self) -> bool:  # type: ignore[override]
        return self.ld_alpha < 1.0 or self.wpo

    @property
    def needs_reference_tokens(self) -> bool:  # type: ignore[override]
        return self.ld_alpha < 1.0

    @property
    def needs_collision(self) -> bool:  # type: ignore[override]
        return self.wpo

    def pair_loss(self, record: PairRecord) -> Tensor:
        raise NotImplementedError

    def loss(self, record: PairRecord) -> Tensor:
        value = self.pair_loss(record)
        return value * wpo_weight(record, self.name) if self.wpo else value

    def scores(self, record: PairRecord) -> tuple[Tensor, ...]:
        """``[B]`` S_w, S_l, S_ref,w, S_ref,l with ``ld_alpha`` applied (sums; see :meth:`per_token`)."""
        return sequence_scores(record, self.name, self.ld_alpha)

    def per_token(self, value: Tensor, response: SequenceLogProbs) -> Tensor:
        """``value / n`` of ``response`` with ``average``, else ``value``."""
        return value / response.count if self.average else value

    def log_ratios(self, record: PairRecord) -> tuple[Tensor, Tensor]:
        """``[B]`` r_w, r_l: log π/π_ref of chosen and rejected (per token with ``average``)."""
        s_w, s_l, ref_w, ref_l = self.scores(record)
        assert record.rejected is not None
        return self.per_token(s_w - ref_w, record.chosen), self.per_token(s_l - ref_l, record.rejected)
