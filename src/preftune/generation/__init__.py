"""Generation beside the trainer: responses from a policy for prompts (token ids in, ids and text out).

:func:`sample` draws N responses per prompt in left-padded batches (:mod:`.sampling`);
:func:`greedy_responses` is the trainer's handful of before/after texts for its report.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from preftune.generation.sampling import Sample, SamplingConfig, sample

__all__ = ["Sample", "SamplingConfig", "greedy_responses", "sample"]


@torch.no_grad()
def greedy_responses(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
    """Greedy (deterministic) continuations of tokenised prompts, decoded without special tokens.

    One prompt at a time: no padding to get wrong, and these are a handful of samples for a
    report, not a throughput path.
    """
    if not prompts:
        return []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    for ids in prompts:
        input_ids = torch.tensor([list(ids)], device=device)
        generated = model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
        )
        out.append(tokenizer.decode(generated[0, input_ids.shape[1] :], skip_special_tokens=True).strip())
    model.train(was_training)
    return out
