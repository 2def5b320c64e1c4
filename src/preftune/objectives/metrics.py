"""Statistical metrics of METHODS.md §6, per example, computed without gradient.

Rewards are β·log-ratios (Rafailov et al. 2023, §5), with the β and averaging of the
objective's first margin term. Accuracy counts a tie (h = 0) as half, so an untrained policy
equal to its reference scores exactly 0.5. A margin within float32 rounding of the four scores
it is made of (|h| ≤ 1e-6·Σ|score|) is a tie: the same weights scored in two batch layouts
(the reference cached from one packing, the policy's step in another) differ by that much.
"""

from __future__ import annotations

import torch
from torch import Tensor

from preftune.objectives.records import GroupRecord, PairRecord, as_float

TIE_TOLERANCE = 1e-6


def _half_credit(x: Tensor, scale: Tensor | None = None) -> Tensor:
    """1 where x > 0, 0.5 where x == 0 (or |x| ≤ TIE_TOLERANCE·scale), 0 where x < 0."""
    sign = torch.sign(x)
    if scale is not None:
        sign = torch.where(x.abs() <= TIE_TOLERANCE * scale, torch.zeros_like(sign), sign)
    return (sign + 1.0) / 2.0


def pair_metrics(record: PairRecord, beta: float = 0.1, average: bool = False) -> dict[str, Tensor]:
    """Per-example ``[B]`` metrics for a batch of pairs; those needing absent fields are omitted.

    - ``logps/chosen``, ``logps/rejected``: A(y) of the policy (per-token means).
    - ``likelihood_accuracy``: A_w > A_l.
    - ``rewards/chosen``, ``rewards/rejected``: β·(score - score_ref).
    - ``margin``: h (sums or means as the margin term uses); ``accuracy``: h > 0.
    - ``chosen_drift``: A_w - A_ref,w (P4 watches it go slightly negative).
    """
    chosen = record.chosen.detach()
    out: dict[str, Tensor] = {"logps/chosen": as_float(chosen.mean)}
    if record.rejected is not None:
        rejected = record.rejected.detach()
        out["logps/rejected"] = as_float(rejected.mean)
        out["likelihood_accuracy"] = _half_credit(as_float(chosen.mean - rejected.mean))
    if record.ref_chosen is not None:
        ref_chosen = record.ref_chosen.detach()
        out["chosen_drift"] = as_float(chosen.mean - ref_chosen.mean)
        chosen_ratio = as_float(chosen.score(average) - ref_chosen.score(average))
        out["rewards/chosen"] = beta * chosen_ratio
        if record.rejected is not None and record.ref_rejected is not None:
            rejected = record.rejected.detach()
            ref_rejected = record.ref_rejected.detach()
            rejected_ratio = as_float(rejected.score(average) - ref_rejected.score(average))
            out["rewards/rejected"] = beta * rejected_ratio
            out["margin"] = chosen_ratio - rejected_ratio
            scores = (chosen, rejected, ref_chosen, ref_rejected)
            scale = sum(as_float(r.score(average)).abs() for r in scores)
            out["accuracy"] = _half_credit(out["margin"], scale)
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
        out["kl"] = as_float(samples.sum - record.ref.detach().sum).mean(-1)
    return out
