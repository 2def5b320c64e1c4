"""Mismatched rows (``kto``'s KL estimate): TRL's rotation by one over a batch's rows, prompts cut from the left to
``max_length``, laid out like the batch itself. Their equality with TRL's own rows is in
tests/objectives/test_trl_kto_parity.py."""

from __future__ import annotations

import pytest

from preftune.data import Batcher, Origin, TokenizedPair, build_batch
from preftune.data.mismatched import mismatched_groups


def _pairs() -> list:
    return [
        TokenizedPair([1, 2, 3], [10, 11], [20], Origin("x", 0)),
        TokenizedPair([4, 5], [12], [21, 22, 23], Origin("x", 1), rejected_prompt_ids=[6]),
    ]


def _rows(groups: list, b: int, c: int) -> list[tuple[list[int], list[int]]]:
    return [groups[i].branch(k) for k in range(c) for i in range(b)]


def test_each_row_takes_the_previous_rows_response() -> None:
    # rows: [1 2 3|10 11], [4 5|12], [1 2 3|20], [6|21 22 23]
    assert _rows(mismatched_groups(_pairs()), 2, 2) == [
        ([1, 2, 3], [21, 22, 23]),
        ([4, 5], [10, 11]),
        ([1, 2, 3], [12]),
        ([6], [20]),
    ]


def test_chosen_only_batches_rotate_their_chosen_responses() -> None:
    assert _rows(mismatched_groups(_pairs(), group_size=1), 2, 1) == [([1, 2, 3], [12]), ([4, 5], [10, 11])]


def test_prompts_are_cut_from_the_left_to_max_length() -> None:
    rows = _rows(mismatched_groups(_pairs(), max_length=4), 2, 2)
    assert rows[0] == ([3], [21, 22, 23])  # 3 + 3 tokens cut to 4: the prompt keeps its last token
    assert all(len(p) + len(r) <= 4 and p for p, r in rows)


@pytest.mark.parametrize("layout", ["padded", "shared", "packed"])
def test_batches_carry_their_mismatched_rows_in_their_own_layout(layout: str) -> None:
    batch = Batcher(0, layout)(_pairs(), [7, 8], mismatched=True).to("cpu")
    assert batch.mismatched is not None and type(batch.mismatched) is type(batch)
    assert batch.mismatched.example_ids.tolist() == [7, 8] and batch.mismatched.group_size == 2
    assert batch.mismatched.response_counts().tolist() == [3, 2, 1, 1]
    assert build_batch(_pairs(), [7, 8], 0, layout).mismatched is None
