"""Statistical metrics of docs/methods.md §6, per example, computed without gradient.

Rewards are β·log-ratios (Rafailov et al. 2023, §5), with the β and averaging of the
objective's first margin term. Accuracy counts a tie (h = 0) as half, so an untrained policy
equal to its reference scores exactly 0.5. A margin within the rounding error of its four scores
in their own dtype is a tie (docs/methods.md §6): |h| ≤ TIE_EPS·eps(dtype)·Σ|score|, eps the machine
epsilon of the coarsest of the four dtypes, because the same weights scored in two batch layouts
(the reference cached from one packing, the policy's step in another) differ by that much. With
TIE_EPS = 8 that is ≈1e-6 relative in float32, ≈2e-15 in float64 and ≈0.06 in bfloat16.
"""

from __future__ import annotations

import torch
from torch import Tensor

from preftune.objectives.records import GroupRecord, PairRecord, SequenceLogProbs, as_float

TIE_EPS = 8.0  # machine epsilons per unit of Σ|score|; 8·eps(float32) = 9.5e-7


def tie_tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance under which a margin of scores held in ``dtype`` counts as a tie."""
    return TIE_EPS * torch.finfo(dtype).eps


def _half_credit(x: Tensor, tolerance: Tensor | None = None) -> Tensor:
    """``[B]``: 1 where x > 0, 0.5 where x == 0 (or |x| ≤ tolerance), 0 where x < 0."""
    sign = torch.sign(x)
    if tolerance is not None:
        # An infinite tolerance (a score at -inf) would call even h = +inf a tie: only a finite one applies.
        tie = (x.abs() <= tolerance) & torch.isfinite(tolerance)
        sign = torch.where(tie, torch.zeros_like(sign), sign)
    return (sign + 1.0) / 2.0


def _accuracy(margin: Tensor, scores: list[SequenceLogProbs], average: bool) -> Tensor:
    """``[B]`` half-credit accuracy of h, with the tie tolerance of the scores' own (coarsest) dtype."""
    values = [r.score(average) for r in scores]
    relative = max(tie_tolerance(v.dtype) for v in values)
    scale = sum(as_float(v).abs() for v in values)
    return _half_credit(margin, relative * scale)


def pair_metrics(record: PairRecord, beta: float = 0.1, average: bool = False) -> dict[str, Tensor]:
    """Per-example ``[B]`` metrics for a batch of pairs; those needing absent fields are omitted.

    - ``logps/chosen``, ``logps/rejected``: A(y) of the policy (per-token means).
    - ``likelihood_accuracy``: A_w > A_l.
    - ``rewards/chosen``, ``rewards/rejected``: β·(score - score_ref).
    - ``margin``: h (sums or means as the margin term uses); ``accuracy``: h > 0.
    - ``chosen_drift``: A_w - A_ref,w (P4 watches it go slightly negative).
    - ``kl``: the batch's KL estimate from mismatched pairs, where the record carries one (``kto``).
    """
    chosen = record.chosen.detach()
    out: dict[str, Tensor] = {"logps/chosen": as_float(chosen.mean)}
    if record.rejected is not None:
        rejected = record.rejected.detach()
        out["logps/rejected"] = as_float(rejected.mean)
        out["likelihood_accuracy"] = _half_credit(as_float(chosen.mean) - as_float(rejected.mean))
    if record.ref_chosen is not None:
        ref_chosen = record.ref_chosen.detach()
        # Promoted before subtracting, as the loss's margin() does, so bfloat16 scores lose nothing more here.
        out["chosen_drift"] = as_float(chosen.mean) - as_float(ref_chosen.mean)
        chosen_ratio = as_float(chosen.score(average)) - as_float(ref_chosen.score(average))
        out["rewards/chosen"] = beta * chosen_ratio
        if record.rejected is not None and record.ref_rejected is not None:
            rejected = record.rejected.detach()
            ref_rejected = record.ref_rejected.detach()
            rejected_ratio = as_float(rejected.score(average)) - as_float(ref_rejected.score(average))
            out["rewards/rejected"] = beta * rejected_ratio
            out["margin"] = chosen_ratio - rejected_ratio
            out["accuracy"] = _accuracy(out["margin"], [chosen, rejected, ref_chosen, ref_rejected], average)
    if record.kl_estimate is not None:
        out["kl"] = as_float(record.kl_estimate.detach()).reshape(()).expand(record.batch_size)
    return out


def group_metrics(record: GroupRecord) -> dict[str, Tensor]:
    """Per-prompt ``[P]`` metrics for sampled groups: reward mean/max, mean log-prob, length."""
    samples = record.samples.detach()
    rewards = as_float(record.rewards.detach())
    out = {
        "reward/mean": rewards.mean(-1),
        "reward/best": rewards.max(-1).values,
        "logps/mean": as_float(samples.mean).mean(-1),
        "length/mean": as_float(samples.count).mean(-1),
    }
    if record.ref is not None:
        out["kl"] = (as_float(samples.sum) - as_float(record.ref.detach().sum)).mean(-1)
    return out
