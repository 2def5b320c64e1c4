"""On-policy terms over C sampled responses per prompt with scalar rewards (P3, docs/methods.md §2).

Each reads a :class:`GroupRecord` with fields shaped ``[P, C]`` and returns a ``[P]`` loss,
the mean over a prompt's samples. Rewards and baselines are constants: gradients flow only
through the policy's log-probs. ``bon`` has no negative gradient; ``bon_neg``, ``reinforce``
(negative advantages) and the pairwise terms do: that contrast is P3's central question.

Rewards: NaN is refused by every term here (:func:`_need_samples`: a NaN is a failed label, or a
response a padded group lacks, and argmax would take it for the best sample); ±inf is
allowed where it has a meaning (``bon``/``bon_neg``: +inf is the best, -inf never is unless
all are; ``rwr``: weight w_max or 0) and refused by ``reinforce``, whose advantage r - b would
be inf - inf. A sample whose weight is zero contributes exactly zero, even if its log-prob is
-inf (0·-inf is NaN in floating point, so the sums below select instead of multiplying).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from preftune.errors import SpecError
from preftune.objectives.base import Term
from preftune.objectives.params import param
from preftune.objectives.records import GroupRecord, as_float, require


def _need_samples(record: GroupRecord, name: str, minimum: int) -> None:
    """At least ``minimum`` samples per prompt, every one scored (no NaN reward)."""
    if record.rewards.shape[1] < minimum:
        raise SpecError(f"{name} needs at least {minimum} samples per prompt, got {record.rewards.shape[1]}")
    nan = int(torch.isnan(record.rewards).sum())
    if nan:
        raise SpecError(
            f"{name}: {nan} of {record.rewards.numel()} rewards are NaN (a failed label, or a response its group "
            "lacks); score those samples or drop them"
        )


def _best_mask(rewards: Tensor) -> Tensor:
    """``[P, C]`` bool, True at the highest-reward sample of each prompt (first on ties)."""
    best = rewards.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(rewards, dtype=torch.bool).scatter_(-1, best, True)


def _weighted_sum(weights: Tensor, score: Tensor) -> Tensor:
    """``[P]`` Σ_c weights·score over ``[P, C]`` constants and scores; a zero weight adds exactly 0
    (and no gradient) even where the score is -inf."""
    return torch.where(weights != 0, weights * score, torch.zeros_like(score)).sum(-1)


@dataclass(frozen=True)
class Reinforce(Term):
    """``reinforce``: -(r - b)·S(y), averaged over a prompt's samples (Williams 1992).

    ``baseline``: ``"loo"`` (leave-one-out mean of the prompt's other samples, RLOO),
    ``"mean"`` (mean of all samples, biased), ``"given"`` (``record.baseline``, e.g. a
    moving average kept by the trainer), ``"none"``. ``kl_coef`` > 0 shapes the reward with
    the sampled KL estimate: r - kl_coef·(S - S_ref), detached (needs ``record.ref``). Rewards
    (after that shaping) must be finite: ±inf is refused, as r - b would be inf - inf = NaN.
    """

    name: ClassVar[str] = "reinforce"
    record_type: ClassVar[type] = GroupRecord
    baseline: Literal["loo", "mean", "given", "none"] = "loo"
    kl_coef: float = param(0.0, ge=0)
    average: bool = False

    @property
    def needs_reference(self) -> bool:  # type: ignore[override]
        return self.kl_coef > 0

    def loss(self, record: GroupRecord) -> Tensor:
        _need_samples(record, self.name, 2 if self.baseline == "loo" else 1)
        score = as_float(record.samples.score(self.average))
        rewards = as_float(record.rewards).detach()
        if self.kl_coef > 0:
            require(record.ref, "reference log-probs (kl_coef > 0)", self.name)
            assert record.ref is not None
            kl = (as_float(record.samples.sum) - as_float(record.ref.sum)).detach()
            rewards = rewards - self.kl_coef * kl
        bad = int((~torch.isfinite(rewards)).sum())
        if bad:
            raise SpecError(
                f"reinforce: rewards must be finite (after the KL penalty, if any), {bad} of {rewards.numel()} are "
                "not: the advantage r - b would be inf - inf"
            )
        n = rewards.shape[-1]
        if self.baseline == "loo":
            base = (rewards.sum(-1, keepdim=True) - rewards) / (n - 1)
        elif self.baseline == "mean":
            base = rewards.mean(-1, keepdim=True).expand_as(rewards)
        elif self.baseline == "given":
            require(record.baseline, "a baseline (baseline='given')", self.name)
            assert record.baseline is not None
            base = as_float(record.baseline).detach()
        else:
            base = torch.zeros_like(rewards)
        return _weighted_sum(-(rewards - base), score) / n


@dataclass(frozen=True)
class RWR(Term):
    """``rwr``: -w·A(y), w = exp(r/T) clipped to [0, w_max] (reward-weighted regression).

    Weights are positive, so there is no negative gradient: it is filtered imitation. A reward of
    +inf gets w_max, one of -inf gets 0 (that sample then adds nothing, even at log-prob -inf).
    """

    name: ClassVar[str] = "rwr"
    record_type: ClassVar[type] = GroupRecord
    temperature: float = param(1.0, gt=0)
    w_max: float = param(20.0, gt=0)
    average: bool = True

    def loss(self, record: GroupRecord) -> Tensor:
        _need_samples(record, self.name, 1)
        # exp(min(r/T, log w_max)) equals the clipped weight and cannot overflow.
        scaled = as_float(record.rewards).detach() / self.temperature
        weights = torch.exp(scaled.clamp(max=math.log(self.w_max)))
        return _weighted_sum(-weights, as_float(record.samples.score(self.average))) / weights.shape[-1]


@dataclass(frozen=True)
class BestOfN(Term):
    """``bon``: -A(y*) for the best-reward sample y* of each prompt (filtered BC).

    y* is the first sample of highest reward; +inf counts as the highest. NaN rewards are refused
    (a NaN is a failed label, not a score; treating it as missing would silently train on fewer
    samples than asked).
    """

    name: ClassVar[str] = "bon"
    record_type: ClassVar[type] = GroupRecord
    average: bool = True

    def loss(self, record: GroupRecord) -> Tensor:
        _need_samples(record, self.name, 1)
        best = _best_mask(record.rewards)
        score = as_float(record.samples.score(self.average))
        return -_weighted_sum(best.to(score.dtype), score)


@dataclass(frozen=True)
class BestOfNNegative(Term):
    """``bon_neg``: -A(y*) + β/(C-1)·Σ_{y≠y*} A(y): best-of-N with a negative gradient (P3).

    y* is chosen as in ``bon`` (first highest reward; NaN rewards are refused).
    """

    name: ClassVar[str] = "bon_neg"
    record_type: ClassVar[type] = GroupRecord
    beta: float = param(0.1, gt=0)
    average: bool = True

    def loss(self, record: GroupRecord) -> Tensor:
        _need_samples(record, self.name, 2)
        best = _best_mask(record.rewards)
        score = as_float(record.samples.score(self.average))
        n = score.shape[-1]
        best_f = best.to(score.dtype)
        return -_weighted_sum(best_f, score) + self.beta / (n - 1) * _weighted_sum(1.0 - best_f, score)
