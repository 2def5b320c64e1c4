"""Pairs for a reward model: read and held out as ``preftune train`` reads them, rendered as chat.

Every prompt + response goes through the tokenizer's chat template, in training and in scoring
alike: a text example (a string prompt) becomes one user turn followed by one assistant turn, a
conversational one is kept as it is. Tokenisation is :func:`preftune.data.tokenize_examples`
(prompts cut from the left to ``max_prompt_length``, by default half of ``max_length``; responses
from the right), so the reward model reads exactly the tokens a policy would be trained on.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from preftune.data.config import DataConfig
from preftune.data.examples import Origin, PreferenceExample, Text
from preftune.data.load import load_preference_data
from preftune.data.options import data_options, resolve_source
from preftune.data.split import SplitSummary, hold_out
from preftune.data.tokenize import TokenizedPair, tokenize_examples
from preftune.errors import PreftuneError


def as_messages(prompt: Text, response: Text | None = None) -> tuple[Any, Any]:
    """``(prompt, response)`` as messages: a string prompt is one user turn, a string response one assistant turn."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    if response is None:
        return messages, None
    return messages, ([{"role": "assistant", "content": response}] if isinstance(response, str) else response)


def as_conversation(example: PreferenceExample) -> PreferenceExample:
    """The example with prompt, responses (and an unpaired rejected's own prompt) as message lists."""
    if example.is_conversational:
        return example
    prompt, chosen = as_messages(example.prompt, example.chosen)
    rejected_prompt = None if example.rejected_prompt is None else as_messages(example.rejected_prompt)[0]
    _, rejected = as_messages(example.rejected_prompt or example.prompt, example.rejected)
    return dataclasses.replace(
        example, prompt=prompt, chosen=chosen, rejected=rejected, rejected_prompt=rejected_prompt
    )


@dataclass(frozen=True)
class RewardPairs:
    """The validated, held-out examples of a run (no tokenizer, no model yet)."""

    train: list[PreferenceExample]
    held_out: list[PreferenceExample]
    split: SplitSummary | None  # None when data.eval names a separate file


def load_pairs(data: DataConfig) -> RewardPairs:
    """Read ``data.train`` (and ``data.eval``) with preftune's loaders and hold out pairs as training does.

    Raises:
        PreftuneError: a missing file, a bad row or column (one line naming them), a split that leaves nothing.
    """
    examples, _ = load_preference_data(resolve_source(data.train), **data_options(data))
    if data.eval is not None:
        held_out, _ = load_preference_data(resolve_source(data.eval), **data_options(data))
        train, split = examples, None
    else:
        train, held_out, split = hold_out(examples, data.eval_size, group_by=data.split_by)
    if data.train_size is not None:
        train = train[: data.train_size]
    return RewardPairs([as_conversation(e) for e in train], [as_conversation(e) for e in held_out], split)


def prompt_budget(max_length: int, max_prompt_length: int | None) -> int:
    """The most prompt tokens: ``max_prompt_length``, or half of ``max_length`` (as ``preftune train``)."""
    return max_prompt_length if max_prompt_length is not None else max_length // 2


def tokenize_pairs(
    examples: list[PreferenceExample], tokenizer: Any, max_length: int, max_prompt_length: int | None = None
) -> list[TokenizedPair]:
    """Chat-rendered token ids of each pair (pairs with no room for a response are dropped, as in training)."""
    if not examples:
        return []
    pairs, _ = tokenize_examples(examples, tokenizer, max_length, prompt_budget(max_length, max_prompt_length))
    return pairs


def sequences(pairs: list[TokenizedPair]) -> tuple[list[list[int]], list[list[int]]]:
    """(chosen rows, rejected rows): each the prompt's ids followed by the response's."""
    chosen = [p.prompt_ids + p.chosen_ids for p in pairs]
    rejected = [(p.rejected_prompt_ids or p.prompt_ids) + p.rejected_ids for p in pairs]
    return chosen, rejected


def encode_completions(
    tokenizer: Any, prompts: list[Any], completions: list[Any], max_length: int, max_prompt_length: int | None = None
) -> list[list[int]]:
    """Token rows of ``prompt + completion``, rendered exactly as training renders a pair's chosen row.

    Raises:
        PreftuneError: different numbers of prompts and completions.
    """
    if len(prompts) != len(completions):
        raise PreftuneError(f"{len(prompts)} prompts but {len(completions)} completions")
    if not prompts:
        return []
    examples = []
    for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
        messages, response = as_messages(prompt, completion)
        examples.append(PreferenceExample(messages, response, response, Origin("score", i + 1)))
    pairs = tokenize_pairs(examples, tokenizer, max_length, max_prompt_length)
    if len(pairs) != len(examples):  # cannot happen: the prompt budget always leaves room for a response
        raise PreftuneError("a completion could not be tokenized within max_length")
    return sequences(pairs)[0]


def pad_rows(rows: list[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-padded ``input_ids [N, L]`` and ``attention_mask [N, L]`` (L: the longest row)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
