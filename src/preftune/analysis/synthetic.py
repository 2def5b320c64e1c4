"""Synthetic pairs whose per-token probabilities are set by hand, for the weight curves (docs/methods.md §3).

Each builder returns a :class:`PairRecord` with full masks, float64 log-probs and one batch row
per point of a sweep, so one :func:`~preftune.analysis.weights.token_weights` call gives a whole
curve (the batch loss is a sum, so rows do not interact).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from preftune.errors import SpecError
from preftune.objectives import PairRecord, SequenceLogProbs

DTYPE = torch.float64


def _logps(tokens: Tensor) -> SequenceLogProbs:
    return SequenceLogProbs.from_tokens(tokens.to(DTYPE), torch.ones_like(tokens, dtype=torch.bool))


def pair_record(
    chosen: Tensor, rejected: Tensor, ref_chosen: Tensor | None = None, ref_rejected: Tensor | None = None
) -> PairRecord:
    """A record from per-token log-probs ``[B, T_w]`` / ``[B, T_l]``, every position a response token.

    The reference defaults to the policy itself (so h = 0 for the margin terms).
    """
    ref_chosen = chosen if ref_chosen is None else ref_chosen
    ref_rejected = rejected if ref_rejected is None else ref_rejected
    return PairRecord(_logps(chosen), _logps(rejected), _logps(ref_chosen), _logps(ref_rejected))


def _check(n: int) -> None:
    if n < 1:
        raise SpecError(f"a synthetic response needs at least 1 token, got n={n}")


def uniform_pairs(p: Tensor, n: int) -> PairRecord:
    """``[B]`` pairs: every token of both responses (n each) at probability ``p[b]``; reference = policy."""
    _check(n)
    if bool(((p <= 0) | (p >= 1)).any()):
        raise SpecError("probabilities must lie strictly between 0 and 1")
    tokens = torch.log(p.to(DTYPE))[:, None].expand(-1, n)
    return pair_record(tokens, tokens.clone())


def margin_pairs(h: Tensor, n: int, p: float = 0.5, average: bool = False) -> PairRecord:
    """``[B]`` pairs with margin h[b]: policy tokens all at ``p``, the reference moved to set h.

    A positive h lowers the reference of the chosen response, a negative one that of the rejected,
    so every reference log-prob stays a log-prob (≤ 0). ``average`` says which h: sums
    (h = ΔS_w - ΔS_l) or P2's per-token means (h = ΔA_w - ΔA_l).
    """
    _check(n)
    h = h.to(DTYPE)
    per_token = 1.0 if average else 1.0 / n
    policy = torch.full((h.shape[0], n), math.log(p), dtype=DTYPE)
    ref_chosen = policy - (h.clamp(min=0) * per_token)[:, None]
    ref_rejected = policy - ((-h).clamp(min=0) * per_token)[:, None]
    return pair_record(policy, policy.clone(), ref_chosen, ref_rejected)


def shared_prefix_pairs(
    n: int,
    p_shared: float = 0.6,
    p_chosen: float = 0.5,
    p_rejected: float = 0.3,
    ref_shift: float = 0.2,
) -> tuple[PairRecord, Tensor]:
    """Pairs of n tokens whose first k tokens are shared, one row per k = 1..n, and the ``[n, n]`` shared mask.

    Shared tokens (same token, same context) have one probability ``p_shared`` under the policy and
    one under the reference, in both responses. The other tokens sit at ``p_chosen`` / ``p_rejected``;
    the reference is ``ref_shift`` nats per token lower on them for the chosen response and higher
    for the rejected one, so h ≠ 0 (row with k = n: identical responses, h = 0).
    """
    _check(n)
    k = torch.arange(1, n + 1)
    shared = torch.arange(n)[None, :] < k[:, None]
    chosen = torch.full((n, n), math.log(p_chosen), dtype=DTYPE).masked_fill(shared, math.log(p_shared))
    rejected = torch.full((n, n), math.log(p_rejected), dtype=DTYPE).masked_fill(shared, math.log(p_shared))
    ref_chosen = torch.where(shared, chosen, chosen - ref_shift)
    ref_rejected = torch.where(shared, rejected, (rejected + ref_shift).clamp(max=-1e-3))
    return pair_record(chosen, rejected, ref_chosen, ref_rejected), shared
