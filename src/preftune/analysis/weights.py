"""Per-token gradient weights of any pairwise objective, by autograd (P1; docs/methods.md §3).

For a loss L summed over the batch, the weight of a good token is w_good(t) = -∂L/∂log π(y_w,t)
(how hard the loss pushes it up) and that of a bad token is w_bad(t) = +∂L/∂log π(y_l,t) (how
hard it pushes it down). Nothing is derived by hand: the objective is called on fresh leaf
copies of the policy's per-token log-probs, so compositions such as ``dpo + 0.5*exmate`` get
their weights for free. Because L is the batch *sum*, each example's weights are its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from preftune.errors import SpecError
from preftune.objectives import Objective, PairRecord, SequenceLogProbs, Term, build


@dataclass(frozen=True)
class TokenWeights:
    """Gradient weights of one batch of pairs (all tensors detached).

    Attributes:
        good: ``[B, T_w]`` w_good(t) = -∂L/∂log π(y_w,t); zero outside ``good_mask``.
        bad: ``[B, T_l]`` w_bad(t) = +∂L/∂log π(y_l,t); zero outside ``bad_mask``;
            ``None`` when the record has no rejected responses.
        loss: ``[B]`` per-example loss of the objective.
        good_mask: ``[B, T_w]`` bool, the chosen responses' tokens.
        bad_mask: ``[B, T_l]`` bool, the rejected responses' tokens, or ``None``.
    """

    good: Tensor
    bad: Tensor | None
    loss: Tensor
    good_mask: Tensor
    bad_mask: Tensor | None


def _leaf(logps: SequenceLogProbs, which: str) -> tuple[Tensor, Tensor]:
    """A fresh leaf copy ``[B, T]`` of per-token log-probs (float32 or wider) and its mask."""
    if logps.tokens is None or logps.mask is None:
        raise SpecError(
            f"token weights need per-token log-probs of the {which} responses; this record has only "
            "sums (build it with SequenceLogProbs.from_tokens(tokens, mask))"
        )
    dtype = torch.promote_types(logps.tokens.dtype, torch.float32)
    return logps.tokens.detach().to(dtype).clone().requires_grad_(True), logps.mask.bool()


def _constant(logps: SequenceLogProbs | None) -> SequenceLogProbs | None:
    return None if logps is None else logps.detach()


def token_weights(objective: Objective | Term | str, record: PairRecord) -> TokenWeights:
    """Per-token weights w_good ``[B, T_w]`` and w_bad ``[B, T_l]`` of ``objective`` on ``record``.

    ``objective`` is anything :func:`preftune.objectives.build` accepts (``"dpo + exmate"``, a
    term, an objective). ``record`` needs per-token log-probs (``tokens`` and ``mask``) for the
    chosen and, if present, the rejected responses; its reference records are used as constants.
    Works on synthetic records and on real log-probs from a trainer alike (any device/dtype;
    weights are computed in at least float32). Raises :class:`SpecError` for a record without
    per-token log-probs or an objective that does not read pairs.
    """
    objective = build(objective)
    if objective.record_type is not PairRecord or not isinstance(record, PairRecord):
        raise SpecError(
            f"token weights are defined for pairwise objectives on a PairRecord; '{objective}' reads "
            f"{objective.record_type.__name__} and got {type(record).__name__}"
        )
    with torch.enable_grad():  # also under a caller's no_grad (e.g. a trainer's evaluation loop)
        good_leaf, good_mask = _leaf(record.chosen, "chosen")
        leaves = [good_leaf]
        rejected, bad_mask = None, None
        if record.rejected is not None:
            bad_leaf, bad_mask = _leaf(record.rejected, "rejected")
            leaves.append(bad_leaf)
            rejected = SequenceLogProbs.from_tokens(bad_leaf, bad_mask)
        live = PairRecord(
            chosen=SequenceLogProbs.from_tokens(good_leaf, good_mask),
            rejected=rejected,
            ref_chosen=_constant(record.ref_chosen),
            ref_rejected=_constant(record.ref_rejected),
        )
        loss = objective(live).loss
        grads = torch.autograd.grad(loss.sum(), leaves, allow_unused=True)
    # A term that never reads a response leaves its gradient unset: a zero weight.
    grads = [torch.zeros_like(leaf) if g is None else g for g, leaf in zip(grads, leaves, strict=True)]
    good = (-grads[0]).masked_fill(~good_mask, 0.0)
    bad = None if bad_mask is None else grads[1].masked_fill(~bad_mask, 0.0)
    return TokenWeights(good=good.detach(), bad=bad, loss=loss.detach(), good_mask=good_mask, bad_mask=bad_mask)
