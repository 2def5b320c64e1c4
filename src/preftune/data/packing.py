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
from preftune.data.collate import example_ids_of, group_size_of, rewards_of, sampled_of
from preftune.data.groups import TokenizedGroup
from preftune.errors import PreftuneError


def pack(
    pairs: Sequence[TokenizedGroup],
    indices: Sequence[int] | Tensor,
    pad_id: int,
    *,
    group_size: int | None = None,
    share_prompt: bool = True,
    attention_length: int | None = None,
) -> PackedBatch:
    """Pack a batch of pairs or groups (see the module docstring for the layout).

    Args:
        pairs: B tokenized pairs or groups.
        indices: ``[B]`` each example's index in its dataset (``example_ids``).
        pad_id: the id written on padding positions.
        group_size: C, the first responses taken of each example (default all; 1: chosen only).
        share_prompt: one prompt per example (a response with a prompt of its own, as the
            rejected response of unpaired data has, gets a block of its own); False: one per response.
        attention_length: the row length at which a position's attention costs as much as the rest
            of the model's work on it (about 6 × the hidden size for a standard transformer; the
            mask is dense, so attention grows with L). Rows are then sized to minimise the modelled
            cost R·L·(1 + L / attention_length); None: rows as long as the longest block.
    """
    if not pairs:
        raise PreftuneError("cannot pack an empty batch")
    if len(indices) != len(pairs):
        raise PreftuneError(f"pack: {len(indices)} indices for {len(pairs)} examples")
    c = group_size_of(pairs, group_size)
    blocks = _blocks(pairs, c, share_prompt)
    sizes = [len(prompt) + sum(len(r) for _, r in responses) for prompt, responses in blocks]
    rows = _cheapest_rows(sizes, attention_length)
    width = max(sum(sizes[k] for k in row) for row in rows)
    shape = (len(rows), width)
    input_ids = torch.full(shape, pad_id, dtype=torch.long)
    position_ids = torch.zeros(shape, dtype=torch.long)
    block_ids = torch.full(shape, -1, dtype=torch.long)
    branch_ids = torch.zeros(shape, dtype=torch.long)
    spans = torch.zeros(4, c * len(pairs), dtype=torch.long)  # prompt start, length, response start, length
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
    ids = example_ids_of(indices)
    return PackedBatch(
        input_ids, position_ids, block_ids, branch_ids, *spans, ids, c, rewards_of(pairs, c), sampled_of(pairs)
    )


Block = tuple[list[int], list[tuple[int, list[int]]]]  # (prompt ids, [(record, response ids), ...])


def _blocks(items: Sequence[TokenizedGroup], c: int, share_prompt: bool) -> list[Block]:
    """Each example's block (its prompt once, then the responses that continue it), and a block of
    its own for every response whose prompt differs (or for every response but the first, unshared)."""
    b = len(items)
    blocks: list[Block] = []
    for i, item in enumerate(items):
        prompt = item.prompt_ids
        own: list[Block] = []
        shared: list[tuple[int, list[int]]] = []
        for k in range(c):
            response_prompt, response = item.branch(k)
            if not response_prompt or not response:
                raise PreftuneError(f"pack: example {i} has an empty prompt or response")
            if k == 0 or (share_prompt and response_prompt == prompt):
                shared.append((k * b + i, response))
            else:
                own.append((response_prompt, [(k * b + i, response)]))
        blocks += [(prompt, shared), *own]
    return blocks


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
