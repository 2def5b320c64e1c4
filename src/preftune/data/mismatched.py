"""Mismatched pairs: each prompt of a batch followed by another example's response (KTO's KL estimate).

A batch of B examples with C responses each has N = C·B rows, row k·B + i the prompt of example i
followed by its k-th response. Mismatched row r is row r's prompt followed by the response of row
(r - 1) mod N: TRL's rotation by one within a batch, (x_1, y_N), (x_2, y_1), ..., (x_N, y_{N-1}),
so the responses scored mismatched are the batch's own (Ethayarajh et al. 2024, §4.1). They come back
as B groups of C in the same order (mismatched row r at response k of group i), which the batch's own
layout then lays out like any other.

A mismatched row is never longer than ``max_length`` (the run's ``data.max_length``): its prompt is
cut from the left, as tokenisation cuts a long prompt; a response already fits ``max_length`` with
at least one prompt token, so at least one is kept. TRL instead keeps the start of the row and cuts
the response's end.
"""

from __future__ import annotations

from collections.abc import Sequence

from preftune.data.collate import group_size_of
from preftune.data.groups import TokenizedGroup


def _fit(prompt: list[int], response: list[int], max_length: int | None) -> list[int]:
    """``prompt`` cut from the left so that ``prompt + response`` fits ``max_length`` (one token at least)."""
    if max_length is None or len(prompt) + len(response) <= max_length:
        return prompt
    return prompt[-max(1, max_length - len(response)) :]


def mismatched_groups(
    items: Sequence[TokenizedGroup], group_size: int | None = None, max_length: int | None = None
) -> list[TokenizedGroup]:
    """B groups of C mismatched rows for the batch of ``items`` (see the module docstring).

    Args:
        items: the batch's B examples, in batch order.
        group_size: C, the responses the batch takes of each (default all).
        max_length: the longest a row may be; prompts are cut from the left to fit.
    """
    c = group_size_of(items, group_size)
    rows = [item.branch(k) for k in range(c) for item in items]  # N = C·B (prompt, response)
    groups = []
    for i, item in enumerate(items):
        prompts, responses = [], []
        for k in range(c):
            response = rows[(k * len(items) + i - 1) % len(rows)][1]
            prompts.append(_fit(rows[k * len(items) + i][0], response, max_length))
            responses.append(response)
        own = tuple(None if prompt == prompts[0] else prompt for prompt in prompts)
        shared = None if all(p is None for p in own) else own
        groups.append(TokenizedGroup(prompts[0], tuple(responses), None, item.origin, own_prompts=shared))
    return groups
