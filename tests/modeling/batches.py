"""Token batches for the modeling tests: random ones for exact comparisons, chat ones for realism."""

from __future__ import annotations

import torch

from preftune.data.batch import TokenBatch

PAD = 2  # SmolLM2's pad = eos = <|im_end|>


def random_batch(
    pairs: int = 3,
    length: int = 24,
    vocab: int = 49152,
    seed: int = 0,
    paired: bool = True,
    first_id: int = 0,
) -> TokenBatch:
    """``pairs`` examples (2·pairs rows when paired) of random tokens: a prompt of 2..8 tokens, then
    a response of at least 2 tokens, then right padding."""
    g = torch.Generator().manual_seed(seed)
    rows = 2 * pairs if paired else pairs
    ids = torch.randint(3, vocab, (rows, length), generator=g)
    lengths = torch.randint(length // 2, length + 1, (rows,), generator=g)
    prompts = torch.randint(2, 9, (rows,), generator=g)
    position = torch.arange(length)[None, :]
    attention = position < lengths[:, None]
    response = (position >= prompts[:, None]) & attention
    ids = ids.masked_fill(~attention, PAD)
    example_ids = torch.arange(first_id, first_id + pairs)
    return TokenBatch(ids, attention.long(), response, example_ids, 2 if paired else 1)


def chat_batch(tokenizer, examples: list[tuple[str, str, str]], first_id: int = 0) -> TokenBatch:
    """A paired batch from ``(prompt, chosen, rejected)`` texts with the tokenizer's chat template;
    each response ends with its closing ``<|im_end|>``, which counts as a response token."""
    rows = []
    for side in (1, 2):
        for example in examples:
            prompt = tokenizer.apply_chat_template(
                [{"role": "user", "content": example[0]}], add_generation_prompt=True, tokenize=False
            )
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            response_ids = tokenizer(example[side], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            rows.append((prompt_ids, response_ids))
    length = max(len(p) + len(r) for p, r in rows)
    ids = torch.full((len(rows), length), tokenizer.pad_token_id)
    attention = torch.zeros(len(rows), length, dtype=torch.long)
    response = torch.zeros(len(rows), length, dtype=torch.bool)
    for i, (p, r) in enumerate(rows):
        ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        attention[i, : len(p) + len(r)] = 1
        response[i, len(p) : len(p) + len(r)] = True
    return TokenBatch(ids, attention, response, torch.arange(first_id, first_id + len(examples)), 2)


def naive_logprobs(model, batch: TokenBatch) -> torch.Tensor:
    """``[N]`` summed response log-probs from the model's full logits ``[N, L, V]`` (log_softmax, gather)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return (logps * batch.response_mask[:, 1:]).sum(1)


def chat_examples(examples: list[tuple[str, str, str]]) -> list:
    """Conversational :class:`~preftune.data.examples.PreferenceExample` s from ``(prompt, chosen, rejected)`` texts."""
    from preftune.data.examples import Origin, PreferenceExample

    return [
        PreferenceExample(
            [{"role": "user", "content": prompt}],
            [{"role": "assistant", "content": chosen}],
            [{"role": "assistant", "content": rejected}],
            Origin("test", row),
        )
        for row, (prompt, chosen, rejected) in enumerate(examples, start=1)
    ]


def pipeline_batch(tokenizer, examples: list[tuple[str, str, str]], layout: str, attention_length: int | None = None):
    """A batch the way a run builds one: chat template and response masks through
    :func:`preftune.data.tokenize_examples`, then ``layout`` (padded, packed or shared)."""
    from preftune.data.batcher import build_batch
    from preftune.data.tokenize import tokenize_examples

    pairs, _ = tokenize_examples(chat_examples(examples), tokenizer, max_length=None)
    indices = list(range(len(pairs)))
    return build_batch(pairs, indices, tokenizer.pad_token_id, layout, attention_length=attention_length)
