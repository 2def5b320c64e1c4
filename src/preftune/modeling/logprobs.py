"""Sequence log-probabilities of responses, with the LM head applied at response positions only.

For a batch of N rows of length L, a causal LM's forward computes logits ``[N, L, V]``: with
SmolLM2's V = 49,152, 16 rows of 256 tokens are 805 MB in float32 before the log-softmax doubles
it, while only the response tokens (often a small share of the positions) are needed. Here the
decoder runs alone (hidden states ``[N, L, H]``), the hidden states that predict response tokens
are gathered (``[M, H]``, M = response tokens in the batch) and the head runs on chunks of
``chunk_size`` of them, so the largest vocabulary-sized tensor is ``[chunk_size, V]``. Under
autograd each chunk is checkpointed when the batch's logits would be large: its logits are
recomputed in the backward pass rather than kept, so memory does not grow with M × V either.

Per-token log-probs are ``logit[token] − logsumexp(logits)`` in float32 for half-precision and
float32 models (float64 for a float64 one, which the tests use for exact comparisons); the head
runs in its weights' precision even under bf16 autocast (:func:`_head_logits` says why).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from preftune.data.batch import Batch, PackedBatch, TokenBatch
from preftune.errors import PreftuneError
from preftune.modeling.attention import packed_attention_mask
from preftune.objectives.records import SequenceLogProbs

KEEP_LOGITS_BYTES = 256 * 2**20  # response logits up to this size are kept for the backward pass


def response_logprobs(
    model: nn.Module,
    batch: Batch,
    *,
    with_tokens: bool,
    chunk_size: int = 1024,
    checkpoint_head: bool | None = None,
    with_collision: bool = False,
) -> SequenceLogProbs:
    """Log-probs of every response of a batch of B examples with C responses each.

    Args:
        model: a transformers causal LM, or a peft model wrapping one (LoRA and the like).
        batch: N = C·B records, padded (a row each) or packed (:class:`PackedBatch`, prompts shared).
        with_tokens: also return per-token log-probs ``tokens [B, C, T]`` and ``mask [B, C, T]``,
            T = the longest response in the batch, left-aligned.
        chunk_size: response positions per LM-head call; bounds the ``[chunk_size, V]`` logits.
        checkpoint_head: recompute each chunk's logits in the backward pass instead of keeping
            them; default: when autograd is recording and the batch's response logits would take
            more than ``KEEP_LOGITS_BYTES``.
        with_collision: also return ``collision [B, C, T]``, log Σ_v π(v | x, y_<t)² at each response
            position (WPO's normaliser, Zhou et al. 2024), without gradient; needs ``with_tokens``.
    Returns:
        A record with ``sum [B, C]`` and ``count [B, C]`` in float32 (float64 for a float64
        model); gradients flow to the model's parameters unless called under ``torch.no_grad()``.
    """
    if with_collision and not with_tokens:
        raise PreftuneError("per-token collision log-probs come with per-token log-probs: pass with_tokens=True")
    decoder, head, transform = causal_lm_parts(model)
    if isinstance(batch, PackedBatch):
        check_packed(batch)
        mask = packed_attention_mask(decoder, batch.block_ids, batch.branch_ids, head.weight.dtype)
        out = decoder(input_ids=batch.input_ids, attention_mask=mask, position_ids=batch.position_ids, use_cache=False)
        hidden = out[0].reshape(-1, out[0].shape[-1])  # [R·L, H]
        owner, slot, target_at, source_at = packed_response_positions(batch)
        states, targets = hidden[source_at], batch.input_ids.reshape(-1)[target_at]  # [M, H], [M]
    else:
        check_batch(batch)
        out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        hidden = out[0]  # [N, L, H]
        owner, cols = batch.response_mask.nonzero(as_tuple=True)  # [M] each, row-major
        states = hidden[owner, cols - 1]  # [M, H]: the state at t-1 predicts the token at t
        targets = batch.input_ids[owner, cols]  # [M]
        slot = (batch.response_mask.cumsum(1) - 1)[owner, cols] if with_tokens else None
    if checkpoint_head is None:
        # Recomputing the logits costs a third of the head's work; keep them when they are small.
        kept_bytes = targets.shape[0] * head.weight.shape[0] * 4
        checkpoint_head = torch.is_grad_enabled() and kept_bytes > KEEP_LOGITS_BYTES
    logps, collision = head_logprobs(
        head, states, targets, chunk_size, checkpoint_head, transform, with_collision=with_collision
    )  # [M] each (collision None unless asked)
    return _grouped(logps, owner, slot, batch, with_tokens, collision)


def _grouped(
    logps: Tensor, owner: Tensor, slot: Tensor | None, batch: Batch, with_tokens: bool, collision: Tensor | None = None
) -> SequenceLogProbs:
    """``[M]`` token log-probs (and collision log-probs) of records ``owner`` -> a ``[B, C]`` record
    (record k·B + i at ``[i, k]``)."""
    counts = batch.response_counts()  # [N]
    n_records, c = counts.shape[0], batch.group_size
    b = n_records // c
    if with_tokens:
        width = int(counts.max())
        as_grid = lambda values: (  # noqa: E731  [M] -> [B, C, T]
            values.new_zeros(n_records, width).index_put((owner, slot), values).view(c, b, width).transpose(0, 1)
        )
        mask = torch.arange(width, device=counts.device)[None, :] < counts[:, None]  # [N, T]
        return SequenceLogProbs.from_tokens(
            as_grid(logps), mask.view(c, b, width).transpose(0, 1), None if collision is None else as_grid(collision)
        )
    sums = logps.new_zeros(n_records).index_add(0, owner, logps)  # [N]
    return SequenceLogProbs(sum=sums.view(c, b).T, count=counts.to(logps.dtype).view(c, b).T)


def sequence_logprobs(
    model: nn.Module,
    batch: Batch,
    *,
    with_tokens: bool,
    chunk_size: int = 1024,
    checkpoint_head: bool | None = None,
) -> tuple[SequenceLogProbs, SequenceLogProbs | None]:
    """:func:`response_logprobs` of a batch of pairs (or of single responses) as ``(chosen, rejected)``,
    each ``[B]`` (tokens ``[B, T]``); ``rejected`` is None for a batch of one response per example."""
    record = response_logprobs(
        model, batch, with_tokens=with_tokens, chunk_size=chunk_size, checkpoint_head=checkpoint_head
    )
    return as_pair(record)


def as_pair(record: SequenceLogProbs) -> tuple[SequenceLogProbs, SequenceLogProbs | None]:
    """A ``[B, C]`` record with C ≤ 2 as ``(first [B], second [B] or None)``."""
    c = record.batch_shape[1]
    if c > 2:
        raise PreftuneError(f"a batch of {c} responses per example is a group, not a pair")
    return record.response(0), (record.response(1) if c == 2 else None)


def packed_response_positions(batch: PackedBatch) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where each response token of a packed batch is, and which position predicts it.

    Returns ``(owner, slot, target_at, source_at)``, each ``[M]`` long: the record of each
    response token, its index in its response, its flat position in ``[R·L]``, and the flat
    position of the hidden state that predicts it: the previous token, except for a response's
    first token, which the prompt's last token predicts (the rejected response does not follow
    its prompt in the buffer).
    """
    counts = batch.response_length
    owner = torch.repeat_interleave(torch.arange(counts.shape[0], device=counts.device), counts)  # [M]
    first = torch.cumsum(counts, 0) - counts  # [N] index of each record's first token in [M]
    slot = torch.arange(owner.shape[0], device=counts.device) - first[owner]
    target_at = batch.response_start[owner] + slot
    prompt_end = batch.prompt_start + batch.prompt_length - 1  # [N]
    source_at = torch.where(slot == 0, prompt_end[owner], target_at - 1)
    return owner, slot, target_at, source_at


def response_token_logprobs(
    head: nn.Module,
    states: Tensor,
    targets: Tensor,
    chunk_size: int = 1024,
    checkpoint_head: bool = False,
    transform=None,
) -> Tensor:
    """``[M]`` log π(target | state) for hidden ``states [M, H]`` and ``targets [M]``.

    In float32 (float64 for float64 states). The head runs on ``chunk_size`` rows at a time;
    ``transform`` (if any) maps raw logits to the model's final logits (soft-capping, scaling).
    """
    return head_logprobs(head, states, targets, chunk_size, checkpoint_head, transform)[0]


def head_logprobs(
    head: nn.Module,
    states: Tensor,
    targets: Tensor,
    chunk_size: int = 1024,
    checkpoint_head: bool = False,
    transform=None,
    *,
    with_collision: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """:func:`response_token_logprobs` ``[M]``, and with ``with_collision`` ``[M]`` log Σ_v π(v | state)²
    (WPO's normaliser, Zhou et al. 2024; no gradient), else None.

    The collision term is read from each chunk's full-vocabulary logits while they exist, so it costs
    no second head call (under checkpointing it is recomputed with the logits in the backward pass).
    """
    if chunk_size < 1:
        raise PreftuneError(f"chunk_size must be at least 1, not {chunk_size}")
    step = _chunk_with_collision if with_collision else _chunk_logprobs
    pieces = []
    for start in range(0, states.shape[0], chunk_size):
        chunk = (head, transform, states[start : start + chunk_size], targets[start : start + chunk_size])
        pieces.append(checkpoint(step, *chunk, use_reentrant=False) if checkpoint_head else step(*chunk))
    if not pieces:
        empty = states.new_zeros(0, dtype=torch.promote_types(states.dtype, torch.float32))
        return empty, (empty.clone() if with_collision else None)
    if with_collision:
        return torch.cat([p[0] for p in pieces]), torch.cat([p[1] for p in pieces])
    return torch.cat(pieces), None


def _head_logits(head: nn.Module, transform, states: Tensor) -> Tensor:
    """``[c, V]`` final logits of ``states [c, H]`` in float32 (float64 for a float64 model).

    The head runs in its weights' precision, outside any autocast: bf16 logits of size ~20 lie on a
    grid of 1/16 to 1/8, so each log-prob read from them errs by up to ~0.06, and a policy's small
    difference from its reference (a margin) drowned in that rounding (issue 19: on SmolLM2 the
    per-sequence gap to float32 fell from 0.19 to 0.11 nats with it, for ~5% of a training step).
    """
    with torch.autocast(states.device.type, enabled=False):
        logits = head(states.to(head.weight.dtype))
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return transform(logits) if transform is not None else logits


def _chunk_logprobs(head: nn.Module, transform, states: Tensor, targets: Tensor) -> Tensor:
    """``[c]`` log-probs of ``targets [c]`` from ``states [c, H]``, via logits ``[c, V]`` (:func:`_head_logits`)."""
    logits = _head_logits(head, transform, states)
    picked = logits.gather(-1, targets[:, None]).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _chunk_with_collision(head: nn.Module, transform, states: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """``[c]`` log-probs of ``targets [c]`` and ``[c]`` log Σ_v π(v)² = logsumexp(2·log_softmax(logits)),
    the latter without gradient, from one head call."""
    logits = _head_logits(head, transform, states)
    normaliser = torch.logsumexp(logits, dim=-1)
    with torch.no_grad():
        collision = torch.logsumexp(2 * (logits - normaliser[:, None]), dim=-1)
    return logits.gather(-1, targets[:, None]).squeeze(-1) - normaliser, collision


def causal_lm_parts(model: nn.Module):
    """``(decoder, head, transform)`` of a causal LM or of a peft model wrapping one.

    ``decoder(input_ids=, attention_mask=)[0]`` gives the final hidden states ``[N, L, H]`` (final
    norm included), ``head(h)`` the raw logits and ``transform`` (or ``None``) what the model's
    forward does to them after the head (Gemma's soft-capping, Cohere's and Granite's scaling).
    A peft model's adapters live inside the decoder's layers, so they (and ``disable_adapter()``)
    apply; prompt-learning methods (virtual tokens) are refused, as their forward adds inputs.
    """
    lm = _unwrap_peft(model)
    get_decoder = getattr(lm, "get_decoder", None)
    decoder = get_decoder() if get_decoder is not None else None
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if decoder is None or decoder is lm or head is None:
        raise PreftuneError(
            f"cannot split {type(lm).__name__} into a decoder and an LM head; a transformers causal LM is needed"
        )
    return decoder, head, _logit_transform(getattr(lm, "config", None))


def check_packed(batch: PackedBatch) -> None:
    """Refuse a packed batch whose spans disagree with its records or that has an empty response."""
    expected = batch.group_size * batch.num_examples
    if batch.num_records != expected:
        raise PreftuneError(f"packed batch has {batch.num_records} records for {batch.num_examples} examples")
    if (batch.response_length < 1).any() or (batch.prompt_length < 1).any():
        raise PreftuneError("packed batch has an empty prompt or response")
    if int((batch.response_start + batch.response_length).max()) > batch.input_ids.numel():
        raise PreftuneError("packed batch spans run past its token buffer")


def check_batch(batch: TokenBatch) -> None:
    """Refuse a batch whose shapes disagree or with a row that has no predictable response token."""
    ids, attention, response = batch.input_ids, batch.attention_mask, batch.response_mask
    if ids.dim() != 2 or attention.shape != ids.shape or response.shape != ids.shape:
        raise PreftuneError(
            f"token batch shapes differ: input_ids {tuple(ids.shape)}, attention_mask {tuple(attention.shape)}, "
            f"response_mask {tuple(response.shape)}"
        )
    expected = batch.group_size * batch.num_examples
    if ids.shape[0] != expected:
        raise PreftuneError(
            f"token batch has {ids.shape[0]} rows for {batch.num_examples} examples of {batch.group_size} "
            f"responses; expected {expected}"
        )
    response = response.bool()
    if response[:, 0].any():
        raise PreftuneError("token batch marks position 0 as a response token; nothing predicts it")
    if (response & ~attention.bool()).any():
        raise PreftuneError("token batch marks padding (attention_mask 0) as response tokens")
    empty = (response.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        b = batch.num_examples
        c = batch.group_size
        names = ("chosen", "rejected")[:c] if c <= 2 else tuple(f"response {k}" for k in range(c))
        which = [f"example {int(batch.example_ids[r % b])} ({names[r // b]})" for r in empty]
        raise PreftuneError(f"empty response (no response tokens, e.g. after truncation): {', '.join(which)}")


def _unwrap_peft(model: nn.Module) -> nn.Module:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return model
    if not isinstance(model, PeftModel):
        return model
    config = model.peft_config.get(model.active_adapter)
    if config is not None and getattr(config, "is_prompt_learning", False):
        raise PreftuneError(
            f"peft method {config.peft_type} adds virtual tokens: response log-probs need a LoRA-like one"
        )
    return model.get_base_model()


def _logit_transform(config):
    """What the causal LM's forward applies to ``lm_head``'s output, for the configs that do anything."""
    if config is None:
        return None
    cap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)  # Cohere: multiplies
    divisor = getattr(config, "logits_scaling", None)  # Granite: divides
    if not cap and scale in (None, 1, 1.0) and divisor in (None, 1, 1.0):
        return None

    def transform(logits: Tensor) -> Tensor:
        if scale not in (None, 1, 1.0):
            logits = logits * scale
        if divisor not in (None, 1, 1.0):
            logits = logits / divisor
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    return transform
