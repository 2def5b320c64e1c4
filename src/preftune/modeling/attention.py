"""The attention mask of a packed batch, in the form the model's attention implementation takes.

A :class:`~preftune.data.batch.PackedBatch` says, per token, which block it belongs to (-1 on
padding) and which branch (0: the prompt, k: the block's k-th response). Token q may attend to
token k when both are in the same block, k is not after q, and k is in the prompt or in q's own
response. transformers passes a 4-D mask ``[R, 1, L, L]`` to the attention layers untouched, so
this works for any HF causal LM whose attention takes a dense mask: boolean for SDPA (True =
attend), additive float for eager attention. Padding attends to itself only, so no row of the
mask is empty (an empty row makes SDPA's softmax NaN).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from preftune.errors import PreftuneError

DENSE_MASK_ATTENTION = ("sdpa", "eager")


def block_attention_mask(block_ids: Tensor, branch_ids: Tensor, *, additive_dtype: torch.dtype | None = None) -> Tensor:
    """``[R, 1, L, L]`` mask from ``block_ids [R, L]`` and ``branch_ids [R, L]``.

    Boolean (True where attention is allowed) unless ``additive_dtype`` is given: then 0 where
    allowed and the dtype's most negative value elsewhere.
    """
    length = block_ids.shape[1]
    position = torch.arange(length, device=block_ids.device)
    causal = position[None, :] <= position[:, None]  # [L(q), L(k)]
    same_block = (block_ids[:, :, None] == block_ids[:, None, :]) & (block_ids[:, None, :] >= 0)  # [R, L, L]
    visible_branch = (branch_ids[:, None, :] == 0) | (branch_ids[:, :, None] == branch_ids[:, None, :])
    allowed = same_block & visible_branch & causal[None]
    allowed |= torch.eye(length, dtype=torch.bool, device=block_ids.device)[None]
    allowed = allowed[:, None]
    if additive_dtype is None:
        return allowed
    blocked = torch.zeros(allowed.shape, dtype=additive_dtype, device=allowed.device)
    return blocked.masked_fill_(~allowed, torch.finfo(additive_dtype).min)


def packed_attention_mask(model: nn.Module, block_ids: Tensor, branch_ids: Tensor, dtype: torch.dtype) -> Tensor:
    """The mask :func:`block_attention_mask` builds, in the kind ``model``'s attention takes."""
    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", None) or "eager"
    if implementation not in DENSE_MASK_ATTENTION:
        raise PreftuneError(
            f"packed batches need attention that takes a dense mask ({' or '.join(DENSE_MASK_ATTENTION)}); the model "
            f"uses {implementation!r}: set data.layout=padded"
        )
    return block_attention_mask(block_ids, branch_ids, additive_dtype=None if implementation == "sdpa" else dtype)


def attention_length(model: nn.Module) -> int | None:
    """The row length at which a position's dense-mask attention costs as much as the rest of its work.

    Per layer and position the linear maps cost about 2·12·H² FLOPs (attention projections and an
    MLP four times wider), attention about 4·H per position attended to: equal at L ≈ 6·H. Used
    to size packed rows; None when the config has no hidden size.
    """
    config = getattr(model, "config", None)
    hidden = getattr(config, "hidden_size", None)
    return 6 * int(hidden) if hidden else None
