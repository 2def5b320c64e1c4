"""Collation: tokenized pairs -> the fixed :class:`~preftune.data.batch.TokenBatch` layout.

B pairs become N = 2B rows: rows 0..B-1 are prompt + chosen, rows B..2B-1 prompt + rejected
(the rejected response's own prompt for unpaired data), right-padded to the longest row.
With ``include_rejected=False`` (``mle`` on good responses only) N = B and ``paired=False``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from preftune.data.batch import Batch, TokenBatch
from preftune.data.tokenize import TokenizedPair
from preftune.errors import PreftuneError


def collate(
    pairs: Sequence[TokenizedPair],
    indices: Sequence[int] | torch.Tensor,
    pad_id: int,
    *,
    include_rejected: bool = True,
    pad_to_multiple_of: int | None = None,
) -> TokenBatch:
    """Lay out a batch of pairs as a :class:`TokenBatch`.

    Args:
        pairs: B tokenized pairs.
        indices: ``[B]`` each pair's index in its dataset (``TokenBatch.example_ids``), ints or a tensor.
        pad_id: the id written on padding positions (they are masked out by ``attention_mask``).
        include_rejected: False for a chosen-only batch (N = B, ``paired=False``).
        pad_to_multiple_of: round the width L up to a multiple of this.

    Returns:
        ``input_ids [N, L]``, ``attention_mask [N, L]``, ``response_mask [N, L]`` (True on the
        response tokens, never at position 0), ``example_ids [B]``.
    """
    if not pairs:
        raise PreftuneError("cannot collate an empty batch")
    if len(indices) != len(pairs):
        raise PreftuneError(f"collate: {len(indices)} indices for {len(pairs)} pairs")
    rows = [(p.prompt_ids, p.chosen_ids) for p in pairs]
    if include_rejected:
        rows += [
            (p.prompt_ids if p.rejected_prompt_ids is None else p.rejected_prompt_ids, p.rejected_ids) for p in pairs
        ]
    width = max(len(prompt) + len(response) for prompt, response in rows)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    response_mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (prompt, response) in enumerate(rows):
        if not prompt or not response:
            raise PreftuneError(f"collate: row {i} has an empty {'prompt' if not prompt else 'response'}")
        n = len(prompt) + len(response)
        input_ids[i, :n] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[i, :n] = 1
        response_mask[i, len(prompt) : n] = True
    if isinstance(indices, torch.Tensor):
        example_ids = indices.detach().to(device="cpu", dtype=torch.long).reshape(-1).clone()
    else:
        example_ids = torch.tensor(list(indices), dtype=torch.long)
    return TokenBatch(input_ids, attention_mask, response_mask, example_ids, paired=include_rejected)


LAYOUTS = ("shared", "packed", "padded")


def build_batch(
    pairs: Sequence[TokenizedPair],
    indices: Sequence[int] | torch.Tensor,
    pad_id: int,
    layout: str = "shared",
    *,
    include_rejected: bool = True,
    attention_length: int | None = None,
) -> Batch:
    """A batch in one of the :data:`LAYOUTS`: ``shared`` (packed, one prompt per pair),
    ``packed`` (packed, one prompt per response) or ``padded`` (one right-padded row per response).
    ``attention_length`` sizes packed rows (see :func:`preftune.data.packing.pack`)."""
    from preftune.data.packing import pack

    if layout == "padded":
        return collate(pairs, indices, pad_id, include_rejected=include_rejected)
    if layout in ("shared", "packed"):
        return pack(
            pairs, indices, pad_id, include_rejected=include_rejected, share_prompt=layout == "shared",
            attention_length=attention_length,
        )  # fmt: skip
    raise PreftuneError(f"unknown batch layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


@dataclass(frozen=True)
class Batcher:
    """How a run lays out its batches: ``batcher(pairs, indices)`` is :func:`build_batch` with these settings."""

    pad_id: int
    layout: str = "shared"
    attention_length: int | None = None

    def __call__(
        self, pairs: Sequence[TokenizedPair], indices: Sequence[int] | torch.Tensor, *, include_rejected: bool = True
    ) -> Batch:
        return build_batch(
            pairs, indices, self.pad_id, self.layout, include_rejected=include_rejected,
            attention_length=self.attention_length,
        )  # fmt: skip
