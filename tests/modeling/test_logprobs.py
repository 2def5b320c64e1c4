"""Response-only chunked log-probs equal the full-logits computation, without a [N, L, V] tensor."""

from __future__ import annotations

import pytest
import torch

from preftune.data.batch import TokenBatch
from preftune.errors import PreftuneError
from preftune.modeling import apply_lora, sequence_logprobs

from .batches import chat_batch, naive_logprobs, random_batch


def _both(chosen, rejected) -> torch.Tensor:
    return torch.cat([chosen.sum, rejected.sum])


@pytest.mark.parametrize(("chunk_size", "checkpoint_head"), [(1024, None), (5, False)])
def test_values_and_gradients_equal_full_logits(tiny64, chunk_size: int, checkpoint_head: bool | None) -> None:
    batch = random_batch(pairs=2, length=20, seed=1)
    chosen, rejected = sequence_logprobs(
        tiny64, batch, with_tokens=False, chunk_size=chunk_size, checkpoint_head=checkpoint_head
    )
    ours, naive = _both(chosen, rejected), naive_logprobs(tiny64, batch)
    assert ours.dtype == torch.float64 and torch.allclose(ours, naive, atol=1e-5, rtol=0)
    assert torch.equal(torch.cat([chosen.count, rejected.count]), batch.response_mask.sum(1).double())

    weights = torch.linspace(-1.0, 2.0, ours.numel(), dtype=torch.float64)  # a loss that mixes the rows
    params = [p for p in tiny64.parameters() if p.requires_grad]
    ours_grads = torch.autograd.grad((weights * ours).sum(), params)
    naive_grads = torch.autograd.grad((weights * naive).sum(), params)
    for a, b in zip(ours_grads, naive_grads, strict=True):
        assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_float32_model_matches_closely(tiny) -> None:
    batch = random_batch(pairs=2, length=20, seed=2)
    ours = _both(*sequence_logprobs(tiny, batch, with_tokens=False))
    assert ours.dtype == torch.float32
    assert torch.allclose(ours, naive_logprobs(tiny, batch), rtol=1e-5, atol=1e-4)


def test_per_token_values_are_left_aligned(tiny64) -> None:
    batch = random_batch(pairs=2, length=20, seed=3)
    chosen, rejected = sequence_logprobs(tiny64, batch, with_tokens=True, chunk_size=3)
    logits = tiny64(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    full = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    width = int(batch.response_mask.sum(1).max())
    assert chosen.tokens.shape == rejected.tokens.shape == (2, width)
    for row, (record, i) in enumerate([(chosen, 0), (chosen, 1), (rejected, 0), (rejected, 1)]):
        expected = full[row][batch.response_mask[row, 1:]]
        n = expected.numel()
        assert torch.allclose(record.tokens[i, :n], expected, atol=1e-10)
        assert record.mask[i, :n].all() and not record.mask[i, n:].any() and (record.tokens[i, n:] == 0).all()
        assert torch.allclose(record.sum[i], expected.sum(), atol=1e-10)


def test_head_never_sees_more_than_a_chunk(tiny) -> None:
    shapes: list[tuple[int, ...]] = []
    tiny.lm_head.register_forward_hook(lambda module, args, out: shapes.append(tuple(out.shape)))
    batch = random_batch(pairs=3, length=24, seed=4)
    chosen, rejected = sequence_logprobs(tiny, batch, with_tokens=False, chunk_size=16, checkpoint_head=True)
    (chosen.sum.sum() + rejected.sum.sum()).backward()
    vocab = tiny.config.vocab_size
    assert shapes and all(len(s) == 2 and s[0] <= 16 and s[1] == vocab for s in shapes)  # never [N, L, V]
    forward = len(shapes) // 2  # checkpointing runs each chunk's head again in the backward pass
    assert sum(s[0] for s in shapes[:forward]) == batch.num_response_tokens


@pytest.mark.parametrize("budget", [0, 2**40])
def test_head_recomputes_only_when_logits_are_large(tiny, monkeypatch, budget: int) -> None:
    import preftune.modeling.logprobs as logprobs

    monkeypatch.setattr(logprobs, "KEEP_LOGITS_BYTES", budget)
    calls: list[int] = []
    tiny.lm_head.register_forward_hook(lambda module, args, out: calls.append(out.shape[0]))
    batch = random_batch(pairs=3, length=24, seed=4)
    chosen, rejected = sequence_logprobs(tiny, batch, with_tokens=False, chunk_size=16)
    (chosen.sum.sum() + rejected.sum.sum()).backward()
    passes = 2 if budget == 0 else 1  # over budget: each chunk's head runs again in the backward pass
    assert sum(calls) == passes * batch.num_response_tokens


def _vocab_sized_saved_tensors(model, compute) -> list[tuple[int, ...]]:
    """Shapes of the non-parameter tensors with a vocabulary-sized last dimension that autograd
    keeps for the backward pass while ``compute()`` runs: the memory that grows with V."""
    params = {p.data_ptr() for p in model.parameters()}
    vocab = model.config.vocab_size
    shapes: list[tuple[int, ...]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.dim() >= 2 and tensor.shape[-1] == vocab and tensor.data_ptr() not in params:
            shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        compute().backward()
    return shapes


def test_no_full_logits_are_kept_for_backward(tiny) -> None:
    batch = random_batch(pairs=2, length=24, seed=9)
    n, length = batch.input_ids.shape

    def ours(checkpoint_head: bool):
        return lambda: sum(
            r.sum.sum()
            for r in sequence_logprobs(tiny, batch, with_tokens=False, chunk_size=16, checkpoint_head=checkpoint_head)
        )

    assert _vocab_sized_saved_tensors(tiny, ours(True)) == []  # checkpointed: logits are recomputed, not kept
    kept = _vocab_sized_saved_tensors(tiny, ours(False))
    assert kept and all(s[0] <= 16 and len(s) == 2 for s in kept)  # at most [chunk, V] pieces
    naive = _vocab_sized_saved_tensors(tiny, lambda: naive_logprobs(tiny, batch).sum())
    assert max(s[0] * s[1] for s in naive if len(s) == 3) >= n * (length - 1)  # the probe does see [N, L, V]


def test_under_no_grad_nothing_is_recorded(tiny) -> None:
    with torch.no_grad():
        chosen, _ = sequence_logprobs(tiny, random_batch(seed=5), with_tokens=True)
    assert not chosen.sum.requires_grad and chosen.tokens.grad_fn is None


def test_unpaired_batch(tiny64) -> None:
    batch = random_batch(pairs=3, seed=6, paired=False)
    chosen, rejected = sequence_logprobs(tiny64, batch, with_tokens=True)
    assert rejected is None and chosen.sum.shape == (3,)
    assert torch.allclose(chosen.sum, naive_logprobs(tiny64, batch), atol=1e-8)


def test_lora_wrapped_model_and_disabled_adapter(tiny64, tokenizer) -> None:
    lora = apply_lora(tiny64, rank=4)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(0))
    batch = chat_batch(tokenizer, [("Name a colour.", "Blue.", "I will not."), ("2+2?", "4", "5, obviously.")])
    ours = _both(*sequence_logprobs(lora, batch, with_tokens=False))
    assert torch.allclose(ours, naive_logprobs(lora, batch), atol=1e-8)
    loss = -ours.sum()
    loss.backward()
    grads = {n: p.grad for n, p in lora.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    with lora.disable_adapter(), torch.no_grad():
        base = _both(*sequence_logprobs(lora, batch, with_tokens=False))
        assert torch.allclose(base, naive_logprobs(lora, batch), atol=1e-8)
    assert (base - ours.detach()).abs().max() > 1e-3


def test_bfloat16_model_gives_float32(tiny) -> None:
    chosen, _ = sequence_logprobs(tiny.to(torch.bfloat16), random_batch(seed=7), with_tokens=True)
    assert chosen.sum.dtype == chosen.tokens.dtype == torch.float32


def test_bad_batches_are_refused(tiny) -> None:
    batch = random_batch(pairs=2, seed=8)
    empty = batch.response_mask.clone()
    empty[3] = False
    with pytest.raises(PreftuneError, match=r"empty response .*example 1 \(rejected\)"):
        sequence_logprobs(
            tiny, TokenBatch(batch.input_ids, batch.attention_mask, empty, batch.example_ids), with_tokens=False
        )
    first = batch.response_mask.clone()
    first[0, 0] = True
    with pytest.raises(PreftuneError, match="position 0"):
        sequence_logprobs(
            tiny, TokenBatch(batch.input_ids, batch.attention_mask, first, batch.example_ids), with_tokens=False
        )
    with pytest.raises(PreftuneError, match="4 rows for 3 examples of 2 responses"):
        sequence_logprobs(
            tiny,
            TokenBatch(batch.input_ids, batch.attention_mask, batch.response_mask, torch.arange(3)),
            with_tokens=False,
        )


def _hand_grid(per_position: torch.Tensor, batch: TokenBatch) -> list[torch.Tensor]:
    """Each row's values at its response tokens (``per_position [N, L-1]``: position t-1 predicts token t)."""
    return [per_position[row][batch.response_mask[row, 1:]] for row in range(per_position.shape[0])]


@pytest.mark.parametrize(("chunk_size", "checkpoint_head"), [(1024, False), (4, True)])
def test_collision_is_logsumexp_of_twice_the_log_softmax(tiny64, chunk_size: int, checkpoint_head: bool) -> None:
    """WPO's log Σ_v π(v)² per response token equals logsumexp(2·log_softmax(logits)) of a direct forward, left-
    aligned like the tokens, without gradient; the token log-probs (and their gradients) are unchanged by it."""
    from preftune.modeling import response_logprobs

    batch = random_batch(pairs=2, length=20, seed=5)
    record = response_logprobs(
        tiny64, batch, with_tokens=True, with_collision=True, chunk_size=chunk_size, checkpoint_head=checkpoint_head
    )
    plain = response_logprobs(tiny64, batch, with_tokens=True, chunk_size=chunk_size, checkpoint_head=checkpoint_head)
    logits = tiny64(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    expected = _hand_grid(torch.logsumexp(2 * torch.log_softmax(logits, -1), -1), batch)
    assert record.collision is not None and record.collision.shape == record.tokens.shape
    assert not record.collision.requires_grad and record.tokens.requires_grad
    b = batch.num_examples
    for row, values in enumerate(expected):
        i, k, n = row % b, row // b, values.numel()
        assert torch.allclose(record.collision[i, k, :n], values, atol=1e-10)
        assert (record.collision[i, k, n:] == 0).all()
    assert torch.equal(record.tokens, plain.tokens)
    (grad,) = torch.autograd.grad(record.sum.sum(), [tiny64.lm_head.weight])
    (plain_grad,) = torch.autograd.grad(plain.sum.sum(), [tiny64.lm_head.weight])
    assert torch.allclose(grad, plain_grad, atol=1e-12)


def test_collision_of_a_packed_batch_matches_the_padded_one(tiny64, tokenizer) -> None:
    from preftune.modeling import response_logprobs

    from .batches import pipeline_batch

    examples = [("Add 2 and 3.", "5.", "It is 6, I think."), ("Name a colour.", "Blue.", "A fruit.")]
    padded, packed = (
        response_logprobs(tiny64, pipeline_batch(tokenizer, examples, layout), with_tokens=True, with_collision=True)
        for layout in ("padded", "packed")
    )
    assert torch.allclose(packed.collision, padded.collision, atol=1e-9)
    assert torch.equal(packed.mask, padded.mask)


def test_collision_needs_tokens(tiny) -> None:
    from preftune.modeling import response_logprobs

    with pytest.raises(PreftuneError, match="with_tokens=True"):
        response_logprobs(tiny, random_batch(pairs=1), with_tokens=False, with_collision=True)
