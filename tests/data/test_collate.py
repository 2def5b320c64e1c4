"""Collation into the fixed TokenBatch layout, and length-grouped batching."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from preftune.data import Origin, PreferenceExample, TokenizedPair, collate, length_grouped_batches, tokenize_examples
from preftune.errors import PreftuneError

PAD = 99


def pair(prompt: list[int], chosen: list[int], rejected: list[int]) -> TokenizedPair:
    return TokenizedPair(prompt, chosen, rejected, Origin("t", 1))


def test_layout_chosen_rows_first_right_padded() -> None:
    pairs = [pair([1, 2, 3], [4, 5], [6]), pair([7], [8, 9, 10, 11], [12, 13])]
    batch = collate(pairs, [10, 42], pad_id=PAD)
    assert batch.paired and batch.num_examples == 2
    assert batch.input_ids.tolist() == [
        [1, 2, 3, 4, 5],  # pair 0, chosen
        [7, 8, 9, 10, 11],  # pair 1, chosen
        [1, 2, 3, 6, PAD],  # pair 0, rejected
        [7, 12, 13, PAD, PAD],  # pair 1, rejected
    ]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert batch.response_mask.tolist() == [
        [False, False, False, True, True],
        [False, True, True, True, True],
        [False, False, False, True, False],
        [False, True, True, False, False],
    ]
    assert batch.example_ids.tolist() == [10, 42]
    assert batch.input_ids.dtype == torch.long and batch.response_mask.dtype == torch.bool
    assert batch.num_response_tokens == 2 + 4 + 1 + 2
    assert not batch.response_mask[:, 0].any()


def test_indices_may_be_a_tensor() -> None:
    batch = collate([pair([1], [2], [3])] * 2, torch.tensor([5, 7]), pad_id=PAD)
    assert batch.example_ids.tolist() == [5, 7] and batch.example_ids.dtype == torch.long


def test_chosen_only_and_padding_multiple() -> None:
    pairs = [pair([1, 2, 3], [4, 5], [6]), pair([7], [8], [9])]
    batch = collate(pairs, [0, 1], pad_id=PAD, group_size=1, pad_to_multiple_of=8)
    assert not batch.paired and batch.input_ids.shape == (2, 8)
    assert batch.input_ids[1].tolist() == [7, 8] + [PAD] * 6


def test_unpaired_rejected_rows_use_their_prompt() -> None:
    p = TokenizedPair([1, 2], [3], [4, 5], Origin("t", 1), rejected_prompt_ids=[6])
    batch = collate([p], [0], pad_id=PAD)
    assert batch.input_ids.tolist() == [[1, 2, 3], [6, 4, 5]]
    assert batch.response_mask.tolist() == [[False, False, True], [False, True, True]]


def test_errors() -> None:
    with pytest.raises(PreftuneError, match="empty batch"):
        collate([], [], pad_id=0)
    with pytest.raises(PreftuneError, match="1 indices for 2 examples"):
        collate([pair([1], [2], [3])] * 2, [0], pad_id=0)


def test_real_tokenized_batch_masks_exactly_the_responses(chatml_tokenizer: Any) -> None:
    tok = chatml_tokenizer
    examples = [
        PreferenceExample(
            [{"role": "user", "content": q}],
            [{"role": "assistant", "content": a}],
            [{"role": "assistant", "content": b}],
            Origin("t", i),
        )
        for i, (q, a, b) in enumerate(
            [("Sky?", "Blue.", "Green."), ("How do I bake bread?", "Mix flour and water, then bake it.", "No.")]
        )
    ]
    pairs, _ = tokenize_examples(examples, tok, max_length=None)
    batch = collate(pairs, [0, 1], pad_id=tok.pad_token_id)
    responses = [tok.decode(row[mask]) for row, mask in zip(batch.input_ids, batch.response_mask, strict=True)]
    assert responses == [
        "Blue.<|im_end|>",
        "Mix flour and water, then bake it.<|im_end|>",
        "Green.<|im_end|>",
        "No.<|im_end|>",
    ]
    assert (batch.input_ids[batch.attention_mask == 0] == tok.pad_token_id).all()


def test_length_grouped_batches() -> None:
    lengths = [((i * 37) % 101) + 1 for i in range(100)]
    batches = length_grouped_batches(lengths, batch_size=8, seed=1, group=4)
    assert sorted(i for b in batches for i in b) == list(range(100))
    assert batches == length_grouped_batches(lengths, batch_size=8, seed=1, group=4)
    assert batches != length_grouped_batches(lengths, batch_size=8, seed=2, group=4)
    grouped = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    plain = sum(
        max(lengths[i] for i in range(k, min(k + 8, 100))) * len(range(k, min(k + 8, 100))) for k in range(0, 100, 8)
    )
    assert grouped < plain  # less padding than batching in order
    assert all(len(b) == 8 for b in length_grouped_batches(lengths, batch_size=8, drop_last=True))
