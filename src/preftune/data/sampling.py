"""Length-grouped batching: batches of similar lengths, so that little of a batch is padding.

As in ``transformers``' ``group_by_length``: the indices are shuffled, cut into mega-batches of
``batch_size * group`` indices, each mega-batch sorted by length (longest first) and cut into
batches; the batch order is then shuffled. Everything is seeded, so a run can resume exactly.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, *, seed: int = 0, group: int = 50, drop_last: bool = False
) -> list[list[int]]:
    """Batches of dataset indices (each index once) grouped by ``lengths`` (e.g. ``TokenizedGroup.length``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = batch_size * max(1, group)
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        mega = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches += [mega[k : k + batch_size] for k in range(0, len(mega), batch_size)]
    if drop_last:
        batches = [b for b in batches if len(b) == batch_size]
    rng.shuffle(batches)
    return batches
