"""Literal similarity: the net push on tokens that the good and bad responses share (P1; docs/methods.md §3).

A token shared by y_w and y_l (the same token in the same context, e.g. inside a common prefix)
has one log-prob, log π(y_w,t) = log π(y_l,t), so a parameter update sees only the difference of
the two pushes: w_good(t) - w_bad(t). DPO weights both responses with one scalar, so its pushes
cancel exactly on shared tokens; MLE plus a penalty (``ul``, ``exmate``) weights them differently.
"""

from __future__ import annotations

import torch
from torch import Tensor

from preftune.analysis.weights import TokenWeights
from preftune.errors import SpecError


def shared_prefix_mask(chosen_ids: Tensor, rejected_ids: Tensor, chosen_mask: Tensor, rejected_mask: Tensor) -> Tensor:
    """``[B, T]`` bool: True on the common prefix of the two responses' token ids.

    Inputs are ``[B, T_w]`` / ``[B, T_l]`` response token ids and masks (response tokens aligned
    at position 0); ``T = min(T_w, T_l)``. Position t is shared iff tokens 0..t are identical and
    inside both responses: the same token in the same context.
    """
    width = min(chosen_ids.shape[-1], rejected_ids.shape[-1])
    same = (chosen_ids[..., :width] == rejected_ids[..., :width]) & chosen_mask[..., :width].bool()
    same = same & rejected_mask[..., :width].bool()
    return torch.cumprod(same.to(torch.int64), dim=-1).bool()


def shared_token_weight(weights: TokenWeights, shared: Tensor) -> Tensor:
    """``[B, T]`` net weight w_good(t) - w_bad(t) on shared positions, zero elsewhere.

    ``shared`` is a ``[B, T]`` bool mask of positions where the chosen and rejected responses hold
    the same token in the same context (e.g. from :func:`shared_prefix_mask`). Every shared
    position must lie inside both responses. Positive: the update raises the shared token;
    negative: it lowers it; zero: the two pushes cancel (DPO).
    """
    if weights.bad is None or weights.bad_mask is None:
        raise SpecError("shared-token weights need rejected responses; these weights have none")
    shared = shared.bool()
    width = shared.shape[-1]
    if shared.shape[:-1] != weights.good.shape[:-1]:
        raise SpecError(f"shared mask {tuple(shared.shape)} does not match batch of {tuple(weights.good.shape)}")
    good, bad = _pad(weights.good, width), _pad(weights.bad, width)
    inside = _pad(weights.good_mask, width) & _pad(weights.bad_mask, width)
    if bool((shared & ~inside).any()):
        raise SpecError("a shared position lies outside the chosen or the rejected response")
    return (good - bad).masked_fill(~shared, 0.0)


def _pad(x: Tensor, width: int) -> Tensor:
    """``[B, width]``: ``x`` cut or zero/False-padded on the right."""
    if x.shape[-1] >= width:
        return x[..., :width]
    pad = torch.zeros(*x.shape[:-1], width - x.shape[-1], dtype=x.dtype, device=x.device)
    return torch.cat([x, pad], dim=-1)
