"""Collation: tokenized examples -> the fixed :class:`~preftune.data.batch.TokenBatch` layout.

B examples of C responses each become N = C·B rows: row k·B + i is the prompt of example i
followed by its k-th response (pairs: rows 0..B-1 prompt + chosen, rows B..2B-1 prompt +
rejected, the rejected response's own prompt for unpaired data), right-padded to the longest row.
``group_size`` takes the first C responses of each example: 1 for a chosen-only batch (``mle``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from preftune.data.batch import TokenBatch
from preftune.data.groups import TokenizedGroup
from preftune.errors import PreftuneError

Responses = TokenizedGroup  # the name training/sources.py imports
"""What a batch is built from: the one tokenised item (a pair is a group of two)."""


def group_size_of(items: Sequence[TokenizedGroup], group_size: int | None) -> int:
    """The C a batch of ``items`` takes: ``group_size``, or every response when None (one C for all)."""
    sizes = {item.num_responses for item in items}
    if group_size is None:
        if len(sizes) > 1:
            raise PreftuneError(f"a batch needs one number of responses per example, got {sorted(sizes)}")
        return sizes.pop()
    if group_size < 1 or group_size > min(sizes):
        raise PreftuneError(f"cannot take {group_size} responses from examples with {min(sizes)}")
    return group_size


def example_ids_of(indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``[B]`` long example ids, on the CPU."""
    if isinstance(indices, torch.Tensor):
        return indices.detach().to(device="cpu", dtype=torch.long).reshape(-1).clone()
    return torch.tensor(list(indices), dtype=torch.long)


def rewards_of(items: Sequence[TokenizedGroup], group_size: int) -> torch.Tensor | None:
    """``[B, C]`` float32 rewards of the first C responses, or None when the examples carry none."""
    if any(item.rewards is None for item in items):
        return None
    return torch.tensor([list(item.rewards)[:group_size] for item in items], dtype=torch.float32)  # type: ignore[arg-type]


def sampled_of(items: Sequence[TokenizedGroup]) -> torch.Tensor | None:
    """``[B]`` bool: which examples were sampled from the policy (their responses carry ``finished``
    flags), or None when none was."""
    flags = [item.finished is not None for item in items]
    return torch.tensor(flags, dtype=torch.bool) if any(flags) else None


def collate(
    pairs: Sequence[TokenizedGroup],
    indices: Sequence[int] | torch.Tensor,
    pad_id: int,
    *,
    group_size: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> TokenBatch:
    """Lay out a batch as a :class:`TokenBatch`.

    Args:
        pairs: B tokenized pairs or groups.
        indices: ``[B]`` each example's index in its dataset (``TokenBatch.example_ids``), ints or a tensor.
        pad_id: the id written on padding positions (they are masked out by ``attention_mask``).
        group_size: C, the first responses taken of each example (default all; 1: chosen only).
        pad_to_multiple_of: round the width L up to a multiple of this.

    Returns:
        ``input_ids [N, L]``, ``attention_mask [N, L]``, ``response_mask [N, L]`` (True on the
        response tokens, never at position 0), ``example_ids [B]``, ``rewards [B, C]`` or None.
    """
    if not pairs:
        raise PreftuneError("cannot collate an empty batch")
    if len(indices) != len(pairs):
        raise PreftuneError(f"collate: {len(indices)} indices for {len(pairs)} examples")
    c = group_size_of(pairs, group_size)
    rows = [item.branch(k) for k in range(c) for item in pairs]
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
    ids = example_ids_of(indices)
    return TokenBatch(input_ids, attention_mask, response_mask, ids, c, rewards_of(pairs, c), sampled_of(pairs))
