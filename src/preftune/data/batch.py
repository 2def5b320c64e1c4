"""Token batches: what the model side receives from the data side.

Two layouts share one contract: N = C·B *records* for B examples of C responses each (C = 2: the
chosen responses of B pairs, then their rejected responses; C = 1: B single responses; C > 2: groups
of sampled or ranked responses), each a prompt followed by one response. Record k·B + i is the k-th
response of example i.
:class:`TokenBatch` gives each record a right-padded row of its own; :class:`PackedBatch`
(built by :func:`preftune.data.packing.pack`) packs pairs padding-free with one shared prompt
per pair. The model side accepts either (``Batch``).

In the padded layout a batch of B pairs is laid out as N = 2B rows, chosen rows first (0..B-1), then rejected rows
(B..2B-1), each row the prompt followed by one response, right-padded. A chosen-only batch (``mle``
reads nothing else) has N = B rows and ``group_size=1``. Rewards, where the examples carry them
(groups), travel with the batch: ``rewards [B, C]``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor


class _Records:
    """What both layouts answer alike, from ``example_ids``, ``group_size`` and ``response_counts()``."""

    example_ids: Tensor
    group_size: int

    @property
    def paired(self) -> bool:
        """True for a batch of pairs (records B..2B-1 are the rejected responses of records 0..B-1)."""
        return self.group_size == 2

    def response_counts(self) -> Tensor:
        raise NotImplementedError

    @property
    def num_examples(self) -> int:
        return int(self.example_ids.shape[0])

    @property
    def num_records(self) -> int:
        return int(self.response_counts().shape[0])

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_counts().sum())


@dataclass
class TokenBatch(_Records):
    """Token ids and masks for one batch.

    Attributes:
        input_ids: ``[N, L]`` long, prompt then response, right-padded with the pad id.
        attention_mask: ``[N, L]`` long, 1 on real tokens.
        response_mask: ``[N, L]`` bool, True at positions holding a response token (the
            closing end-of-turn token included); the token at position t is predicted by the
            logits at position t-1, so position 0 is never a response position.
        example_ids: ``[B]`` long, the index of each pair (or example) in its dataset, for the
            reference cache and for exact resumption.
        group_size: C, responses per example (rows k·B..k·B+B-1 hold the k-th responses).
        rewards: ``[B, C]`` float, each response's reward, or None.
        sampled: ``[B]`` bool, True for an example whose responses were sampled from the policy (an
            on-policy round's), or None when none was.
        mismatched: the same B examples' mismatched pairs (each prompt followed by another row's
            response, :mod:`preftune.data.mismatched`) in this layout, for ``kto``'s KL estimate; or None.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    example_ids: Tensor
    group_size: int = 2
    rewards: Tensor | None = None
    sampled: Tensor | None = None
    mismatched: Batch | None = None

    @property
    def num_tokens(self) -> int:
        """Positions holding a real token (padding excluded)."""
        return int(self.attention_mask.sum())

    def response_counts(self) -> Tensor:
        """``[N]`` response tokens of each row."""
        return self.response_mask.sum(1)

    def logical_rows(self) -> Iterator[tuple[int, Tensor, Tensor]]:
        """``(row, ids, response_mask)`` of each row without its padding (on the CPU)."""
        ids, attention, response = self.input_ids.cpu(), self.attention_mask.cpu().bool(), self.response_mask.cpu()
        for r in range(self.num_records):
            yield r, ids[r][attention[r]], response[r][attention[r]]

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.response_mask.to(device),
            self.example_ids.to(device),
            self.group_size,
            None if self.rewards is None else self.rewards.to(device),
            None if self.sampled is None else self.sampled.to(device),
            None if self.mismatched is None else self.mismatched.to(device),
        )


@dataclass
class PackedBatch(_Records):
    """B examples of C responses each packed into R rows of length L.

    The N = C·B *records* (record k·B + i: the k-th response of example i; for pairs chosen
    0..B-1, then rejected B..2B-1) are the logical rows of a :class:`~preftune.data.batch.TokenBatch`;
    each is located by offsets into the flattened ``[R·L]`` token buffer.

    Attributes:
        input_ids: ``[R, L]`` long, padded with the pad id.
        position_ids: ``[R, L]`` long, each response continuing from its prompt's last position.
        block_ids: ``[R, L]`` long, the block (prompt and its responses) of each token; -1 on padding.
        branch_ids: ``[R, L]`` long, 0 on a prompt token, k > 0 on the k-th response of its block.
        prompt_start, prompt_length: ``[N]`` long, each record's prompt in the flat buffer.
        response_start, response_length: ``[N]`` long, each record's response in the flat buffer.
        example_ids: ``[B]`` long, each example's index in its dataset.
        group_size: C, responses per example.
        rewards: ``[B, C]`` float, each response's reward, or None.
        sampled: ``[B]`` bool, True for an example whose responses were sampled from the policy, or None.
        mismatched: the same B examples' mismatched pairs, packed alike (``kto``), or None.
    """

    input_ids: Tensor
    position_ids: Tensor
    block_ids: Tensor
    branch_ids: Tensor
    prompt_start: Tensor
    prompt_length: Tensor
    response_start: Tensor
    response_length: Tensor
    example_ids: Tensor
    group_size: int = 2
    rewards: Tensor | None = None
    sampled: Tensor | None = None
    mismatched: Batch | None = None

    @property
    def num_tokens(self) -> int:
        """Positions holding a real token (the padding left at the ends of rows excluded)."""
        return int((self.block_ids >= 0).sum())

    def response_counts(self) -> Tensor:
        """``[N]`` response tokens of each record."""
        return self.response_length

    def logical_rows(self) -> Iterator[tuple[int, Tensor, Tensor]]:
        """``(record, ids [P+R], response_mask [P+R])`` of each record, as an unpacked row would hold it."""
        flat = self.input_ids.reshape(-1).cpu()
        for r in range(self.num_records):
            p0, p, s0, s = (int(t[r]) for t in self._spans())
            ids = torch.cat([flat[p0 : p0 + p], flat[s0 : s0 + s]])
            mask = torch.arange(p + s) >= p
            yield r, ids, mask

    def _spans(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.prompt_start, self.prompt_length, self.response_start, self.response_length

    def to(self, device: torch.device | str) -> PackedBatch:
        moved = [t.to(device) for t in (self.input_ids, self.position_ids, self.block_ids, self.branch_ids)]
        rewards = None if self.rewards is None else self.rewards.to(device)
        sampled = None if self.sampled is None else self.sampled.to(device)
        spans = (t.to(device) for t in self._spans())
        mismatched = None if self.mismatched is None else self.mismatched.to(device)
        return PackedBatch(*moved, *spans, self.example_ids.to(device), self.group_size, rewards, sampled, mismatched)


Batch = TokenBatch | PackedBatch
