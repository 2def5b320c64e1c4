"""Token batches: what the model side receives from the data side.

A batch of B pairs is laid out as N = 2B rows, chosen rows first (0..B-1), then rejected rows
(B..2B-1), each row the prompt followed by one response, right-padded. A batch of unpaired
examples (``mle`` on good responses only) has N = B rows and ``paired=False``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TokenBatch:
    """Token ids and masks for one batch.

    Attributes:
        input_ids: ``[N, L]`` long, prompt then response, right-padded with the pad id.
        attention_mask: ``[N, L]`` long, 1 on real tokens.
        response_mask: ``[N, L]`` bool, True at positions holding a response token (the
            closing end-of-turn token included); the token at position t is predicted by the
            logits at position t-1, so position 0 is never a response position.
        example_ids: ``[B]`` long, the index of each pair (or example) in its dataset, for the
            reference cache and for exact resumption.
        paired: True when rows B..2B-1 are the rejected responses of rows 0..B-1.
    """

    input_ids: Tensor
    attention_mask: Tensor
    response_mask: Tensor
    example_ids: Tensor
    paired: bool = True

    @property
    def num_examples(self) -> int:
        return int(self.example_ids.shape[0])

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_mask.sum())

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.response_mask.to(device),
            self.example_ids.to(device),
            self.paired,
        )
