"""Padding-free packing with a shared prompt: a pair costs prompt + chosen + rejected tokens.

The padded layout (:mod:`preftune.data.collate`) spends ``2 × (prompt + response)`` positions
per pair plus padding to the longest row. Here each pair becomes one *block*: its prompt once,
then the chosen and the rejected response side by side, both continuing from the prompt::

    tokens     p0 p1 p2 | c0 c1 c2 c3 | r0 r1
    positions   0  1  2 |  3  4  5  6 |  3  4
    branch      0  0  0 |  1  1  1  1 |  2  2

A token may attend to an earlier token of its own block when that token is in the prompt
(branch 0) or in its own response, so ``r0`` sees the prompt but not the chosen response, and
with the position ids above every response token is computed exactly as in a padded row of
its own. Blocks are then packed, first-fit by decreasing length, into rows at least as long as
the longest block, of the length a cost model prefers (``attention_length``); whatever is left
at the end of a row is padding (block -1). The attention rule
is turned into a ``[R, 1, L, L]`` mask on the model side (:mod:`preftune.modeling.attention`).

With ``share_prompt=False`` every response gets its own copy of the prompt (packing only),
which is what the padded layout computes, without the padding: the two are measured apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from preftune.data.batch import PackedBatch
from preftune.data.tokenize import TokenizedPair
from preftune.errors import PreftuneError


def pack(
    pairs: Sequence[TokenizedPair],
    indices: Sequence[int] | Tensor,
    pad_id: int,
    *,
    include_rejected: bool = True,
    share_prompt: bool = True,
    attention_length: int | None = None,
) -> PackedBatch:
    """Pack a batch of pairs (see the module docstring for the layout).

    Args:
        pairs: B tokenized pairs.
        indices: ``[B]`` each pair's index in its dataset (``example_ids``).
        pad_id: the id written on padding positions.
        include_rejected: False for a chosen-only batch (N = B records, ``paired=False``).
        share_prompt: one prompt per pair (a pair whose rejected response has a prompt of its
            own, from unpaired data, always gets a second block); False: one per response.
        attention_length: the row length at which a position's attention costs as much as the rest
            of the model's work on it (about 6 × the hidden size for a standard transformer; the
            mask is dense, so attention grows with L). Rows are then sized to minimise the modelled
            cost R·L·(1 + L / attention_length); None: rows as long as the longest block.
    """
    if not pairs:
        raise PreftuneError("cannot pack an empty batch")
    if len(indices) != len(pairs):
        raise PreftuneError(f"pack: {len(indices)} indices for {len(pairs)} pairs")
    b = len(pairs)
    # A block: (prompt ids, [(record, response ids), ...]).
    blocks: list[tuple[list[int], list[tuple[int, list[int]]]]] = []
    for i, pair in enumerate(pairs):
        if not pair.prompt_ids or not pair.chosen_ids or (include_rejected and not pair.rejected_ids):
            raise PreftuneError(f"pack: pair {i} has an empty prompt or response")
        responses = [(i, pair.chosen_ids)]
        separate = None
        if include_rejected:
            own_prompt = pair.rejected_prompt_ids is not None and pair.rejected_prompt_ids != pair.prompt_ids
            if share_prompt and not own_prompt:
                responses.append((b + i, pair.rejected_ids))
            else:
                rejected_prompt = pair.prompt_ids if pair.rejected_prompt_ids is None else pair.rejected_prompt_ids
                separate = (rejected_prompt, [(b + i, pair.rejected_ids)])
        blocks.append((pair.prompt_ids, responses))
        if separate is not None:
            blocks.append(separate)
    sizes = [len(prompt) + sum(len(r) for _, r in responses) for prompt, responses in blocks]
    rows = _cheapest_rows(sizes, attention_length)
    width = max(sum(sizes[k] for k in row) for row in rows)

    n_records = 2 * b if include_rejected else b
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    block_ids = torch.full(shape, -1, dtype=torch.long)
    branch_ids = torch.zeros(shape, dtype=torch.long)
    spans = torch.zeros(4, n_records, dtype=torch.long)  # prompt start, length, response start, length
    for r, row in enumerate(rows):
        at = 0
        for k in row:
            prompt, responses = blocks[k]
            base = r * width
            p = len(prompt)
            input_ids[r, at : at + p] = torch.tensor(prompt)
            position_ids[r, at : at + p] = torch.arange(p)
            block_ids[r, at : at + p] = k
            cursor = at + p
            for branch, (record, response) in enumerate(responses, start=1):
                s = len(response)
                input_ids[r, cursor : cursor + s] = torch.tensor(response)
                position_ids[r, cursor : cursor + s] = torch.arange(p, p + s)
                block_ids[r, cursor : cursor + s] = k
                branch_ids[r, cursor : cursor + s] = branch
                spans[:, record] = torch.tensor([base + at, p, base + cursor, s])
                cursor += s
            at = cursor
    if isinstance(indices, Tensor):
        example_ids = indices.detach().to(device="cpu", dtype=torch.long).reshape(-1).clone()
    else:
        example_ids = torch.tensor(list(indices), dtype=torch.long)
    return PackedBatch(input_ids, position_ids, block_ids, branch_ids, *spans, example_ids, include_rejected)


def _cheapest_rows(sizes: Sequence[int], attention_length: int | None) -> list[list[int]]:
    """First-fit-decreasing rows at the capacity (the longest block, or a longer one) of least modelled cost."""
    longest, total = max(sizes), sum(sizes)
    best = _first_fit_decreasing(sizes, longest)
    if attention_length is None or attention_length <= 0:
        return best

    def cost(rows: list[list[int]]) -> float:
        width = max(sum(sizes[k] for k in row) for row in rows)
        return len(rows) * width * (1 + width / attention_length)

    best_cost = cost(best)
    capacity = longest
    while capacity < total:
        capacity = min(total, capacity + max(1, longest // 4))
        rows = _first_fit_decreasing(sizes, capacity)
        if (c := cost(rows)) < best_cost:
            best, best_cost = rows, c
    return best


def _first_fit_decreasing(sizes: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) of total size <= ``capacity``, items placed longest first."""
    bins: list[list[int]] = []
    room: list[int] = []
    for k in sorted(range(len(sizes)), key=lambda k: -sizes[k]):
        for j, free in enumerate(room):
            if sizes[k] <= free:
                bins[j].append(k)
                room[j] -= sizes[k]
                break
        else:
            bins.append([k])
            room.append(capacity - sizes[k])
    return bins
