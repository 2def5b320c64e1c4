"""The packed layouts hold exactly the padded layout's records, in fewer positions."""

from __future__ import annotations

import pytest
import torch

from preftune.data import PackedBatch, TokenizedPair, build_batch, collate, pack
from preftune.data.examples import Origin
from preftune.errors import PreftuneError
from preftune.modeling.attention import block_attention_mask
from preftune.modeling.fingerprint import batches_fingerprint

PAD = 2


def pair(prompt: list[int], chosen: list[int], rejected: list[int], rejected_prompt=None) -> TokenizedPair:
    return TokenizedPair(prompt, chosen, rejected, Origin("test", 1), rejected_prompt)


def test_shared_layout_by_hand() -> None:
    # Two pairs: block 0 = [1 2 | 3 4 | 5] (5 tokens), block 1 = [6 | 7 | 8 9] (4 tokens); capacity 5.
    batch = pack([pair([1, 2], [3, 4], [5]), pair([6], [7], [8, 9])], [10, 11], PAD)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5], [6, 7, 8, 9, PAD]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 2], [0, 1, 1, 2, 0]]
    assert batch.block_ids.tolist() == [[0, 0, 0, 0, 0], [1, 1, 1, 1, -1]]
    assert batch.branch_ids.tolist() == [[0, 0, 1, 1, 2], [0, 1, 2, 2, 0]]
    # records: chosen 0, chosen 1, rejected 0, rejected 1; flat offsets into [2 * 5]
    assert batch.prompt_start.tolist() == [0, 5, 0, 5] and batch.prompt_length.tolist() == [2, 1, 2, 1]
    assert batch.response_start.tolist() == [2, 6, 4, 7] and batch.response_length.tolist() == [2, 1, 1, 2]
    assert batch.num_tokens == 9 and batch.num_response_tokens == 6 and batch.example_ids.tolist() == [10, 11]


def test_block_mask_by_hand() -> None:
    batch = pack([pair([1, 2], [3, 4], [5])], [0], PAD)
    allowed = block_attention_mask(batch.block_ids, batch.branch_ids)[0, 0].int().tolist()
    assert allowed == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 0, 0, 1],  # the rejected token sees the prompt and itself, not the chosen response
    ]
    additive = block_attention_mask(batch.block_ids, batch.branch_ids, additive_dtype=torch.float32)[0, 0]
    assert (additive == 0).int().tolist() == allowed and additive.min() == torch.finfo(torch.float32).min


def test_padding_and_other_blocks_are_invisible() -> None:
    batch = pack([pair([1], [2, 3, 4, 5], [6]), pair([7], [8], [9])], [0, 1], PAD)  # 6 + 3 tokens: two rows
    allowed = block_attention_mask(batch.block_ids, batch.branch_ids)[:, 0]
    blocks = batch.block_ids
    for r in range(blocks.shape[0]):
        for q in range(blocks.shape[1]):
            for k in range(blocks.shape[1]):
                if allowed[r, q, k] and q != k:
                    assert blocks[r, q] == blocks[r, k] >= 0


@pytest.mark.parametrize("layout", ["shared", "packed"])
def test_records_are_the_padded_rows(hh_pairs, layout: str) -> None:
    indices = list(range(100, 100 + len(hh_pairs)))
    padded = collate(hh_pairs, indices, PAD)
    packed = build_batch(hh_pairs, indices, PAD, layout)
    assert isinstance(packed, PackedBatch)
    rows = {r: (ids, mask) for r, ids, mask in padded.logical_rows()}
    for r, ids, mask in packed.logical_rows():
        assert torch.equal(ids, rows[r][0]) and torch.equal(mask, rows[r][1])
    assert torch.equal(packed.response_counts(), padded.response_counts())
    # the reference cache key sees the data, not the layout
    assert batches_fingerprint([packed]) == batches_fingerprint([padded])


def test_token_savings(hh_pairs) -> None:
    padded = collate(hh_pairs, range(len(hh_pairs)), PAD)
    packed = build_batch(hh_pairs, range(len(hh_pairs)), PAD, "packed")
    shared = build_batch(hh_pairs, range(len(hh_pairs)), PAD, "shared")
    logical = sum(len(p.prompt_ids) * 2 + len(p.chosen_ids) + len(p.rejected_ids) for p in hh_pairs)
    unique = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in hh_pairs)
    assert padded.num_tokens == packed.num_tokens == logical
    assert shared.num_tokens == unique < logical
    # first-fit: no row longer than the longest block, and fewer positions than padding
    longest = max(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in hh_pairs)
    assert shared.input_ids.shape[1] == longest
    assert shared.input_ids.numel() < packed.input_ids.numel() < padded.input_ids.numel()


def test_unpaired_and_own_prompts() -> None:
    single = pack([pair([1], [2], [3]), pair([4, 5], [6], [7])], [0, 1], PAD, group_size=1)
    assert not single.paired and single.num_records == 2 and single.num_tokens == 5
    # a rejected response with a prompt of its own gets a block of its own
    own = pack([pair([1], [2], [3], rejected_prompt=[8, 9])], [0], PAD)
    rows = {r: ids.tolist() for r, ids, _ in own.logical_rows()}
    assert rows == {0: [1, 2], 1: [8, 9, 3]}
    assert own.num_tokens == 5


def test_bad_packs_are_refused() -> None:
    with pytest.raises(PreftuneError, match="empty batch"):
        pack([], [], PAD)
    with pytest.raises(PreftuneError, match="empty prompt or response"):
        pack([pair([1], [], [3])], [0], PAD)
    with pytest.raises(PreftuneError, match="unknown batch layout 'dense'"):
        build_batch([pair([1], [2], [3])], [0], PAD, "dense")
