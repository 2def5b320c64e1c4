"""Reference strategies agree with a direct computation; the precomputed cache hits and misses right."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preftune.data.batch import TokenBatch
from preftune.errors import PreftuneError
from preftune.modeling import (
    AdapterDisabledReference,
    FrozenCopyReference,
    ModelReference,
    PrecomputedReference,
    apply_lora,
    batches_fingerprint,
    load_model,
    model_fingerprint,
    sequence_logprobs,
)

from .batches import random_batch


def _direct(model, batch: TokenBatch) -> torch.Tensor:
    with torch.no_grad():
        chosen, rejected = sequence_logprobs(model.eval(), batch, with_tokens=False)
    return torch.cat([chosen.sum, rejected.sum])


def _values(reference, batch: TokenBatch) -> torch.Tensor:
    chosen, rejected = reference(batch)
    assert chosen.tokens is None and not chosen.sum.requires_grad
    assert torch.equal(torch.cat([chosen.count, rejected.count]), batch.response_mask.sum(1).float())
    return torch.cat([chosen.sum, rejected.sum])


def _dataset(seed: int = 0) -> list[TokenBatch]:
    return [random_batch(pairs=2, length=16, seed=seed + i, first_id=2 * i) for i in range(3)]


def test_adapter_disabled_is_the_base_model_and_keeps_training_mode(tiny_path: Path) -> None:
    base = load_model(tiny_path)
    batch = random_batch(seed=10)
    expected = _direct(base, batch)
    policy = apply_lora(load_model(tiny_path), dropout=0.1).train()
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_B" in name:
                param.add_(0.1)
    assert not torch.allclose(_direct(policy, batch), expected, atol=1e-3)
    policy.train()
    assert torch.allclose(_values(AdapterDisabledReference(policy), batch), expected, atol=1e-5)
    assert policy.training and all(m.training for m in policy.modules())
    with pytest.raises(PreftuneError, match="peft model"):
        AdapterDisabledReference(base)


def test_frozen_copy_does_not_follow_the_policy(tiny) -> None:
    batch = random_batch(seed=11)
    expected = _direct(tiny, batch)
    reference = FrozenCopyReference(tiny)
    with torch.no_grad():
        for param in tiny.parameters():
            param.mul_(1.5)
    assert torch.allclose(_values(reference, batch), expected, atol=1e-5)
    assert all(not p.requires_grad for p in reference.model.parameters())
    assert all(p.requires_grad for p in tiny.parameters())


def test_precomputed_equals_direct_and_hits_the_cache(tiny, tmp_path: Path) -> None:
    data = _dataset()
    built = PrecomputedReference.build(ModelReference(tiny), data, cache_dir=tmp_path)
    assert not built.hit and built.path.is_file() and built.path.parent == tmp_path
    again = PrecomputedReference.build(tiny, iter(data), cache_dir=tmp_path)
    assert again.hit and again.path == built.path
    for batch in data:
        expected = _direct(tiny, batch)
        assert torch.allclose(_values(built, batch), expected, atol=1e-5)
        assert torch.equal(_values(again, batch), _values(built, batch))
    # rows are found by example id, whatever the batching
    shuffled = data[1]
    order = torch.tensor([1, 0])
    swapped = TokenBatch(
        torch.cat([shuffled.input_ids[:2][order], shuffled.input_ids[2:][order]]),
        torch.cat([shuffled.attention_mask[:2][order], shuffled.attention_mask[2:][order]]),
        torch.cat([shuffled.response_mask[:2][order], shuffled.response_mask[2:][order]]),
        shuffled.example_ids[order],
    )
    assert torch.equal(_values(built, swapped), _values(built, shuffled)[torch.tensor([1, 0, 3, 2])])


def test_cache_misses_when_data_or_model_change(tiny_path: Path, tmp_path: Path) -> None:
    model, data = load_model(tiny_path), _dataset()
    first = PrecomputedReference.build(model, data, cache_dir=tmp_path)
    other_data = PrecomputedReference.build(model, _dataset(seed=100), cache_dir=tmp_path)
    assert not other_data.hit and other_data.path != first.path
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-3
    other_model = PrecomputedReference.build(model, data, cache_dir=tmp_path)
    assert not other_model.hit and len({first.path, other_data.path, other_model.path}) == 3


def test_fingerprints(tiny_path: Path) -> None:
    plain = load_model(tiny_path)
    fingerprint = model_fingerprint(plain)
    assert model_fingerprint(load_model(tiny_path)) == fingerprint
    assert AdapterDisabledReference(apply_lora(load_model(tiny_path))).fingerprint() == fingerprint
    assert model_fingerprint(load_model(tiny_path, dtype="bfloat16")) != fingerprint
    data = _dataset()
    assert batches_fingerprint(data) == batches_fingerprint(list(reversed(data)))
    padded = [
        TokenBatch(
            torch.nn.functional.pad(b.input_ids, (0, 3), value=2),
            torch.nn.functional.pad(b.attention_mask, (0, 3)),
            torch.nn.functional.pad(b.response_mask, (0, 3)),
            b.example_ids,
        )
        for b in data
    ]
    assert batches_fingerprint(padded) == batches_fingerprint(data)  # padding is not data


def test_lookups_refuse_unknown_or_retokenised_examples(tiny, tmp_path: Path) -> None:
    data = _dataset()
    reference = PrecomputedReference.build(tiny, data, cache_dir=tmp_path)
    with pytest.raises(PreftuneError, match=r"examples \[40, 41\] are not in"):
        reference(random_batch(pairs=2, length=16, first_id=40))
    changed = data[0]
    shorter = changed.response_mask.clone()
    shorter[0, shorter[0].nonzero()[-1]] = False
    with pytest.raises(PreftuneError, match="response lengths differ"):
        reference(TokenBatch(changed.input_ids, changed.attention_mask, shorter, changed.example_ids))


def test_cache_misses_when_the_autocast_precision_changes(tiny_path: Path, tmp_path: Path) -> None:
    """bf16 and fp32 reference values differ (up to ~0.5 nats on SmolLM2): one must never be read for the other."""
    model, data = load_model(tiny_path), _dataset()
    fp32 = PrecomputedReference.build(model, data, cache_dir=tmp_path)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = PrecomputedReference.build(model, data, cache_dir=tmp_path)
        again = PrecomputedReference.build(model, data, cache_dir=tmp_path)
    assert not bf16.hit and bf16.path != fp32.path and again.hit and again.path == bf16.path
    assert not torch.equal(bf16.table["sum"], fp32.table["sum"])


def test_a_round_of_groups_is_precomputed_in_memory_and_read_by_columns(tiny_path: Path, tmp_path: Path) -> None:
    """``compute`` keeps a [E, C] table in memory (nothing on disk); a batch of the first C' columns reads them."""
    model = load_model(tiny_path)
    data = _dataset()
    table = PrecomputedReference.compute(model, data)
    assert table.path is None and table.group_size == 2
    live = ModelReference(model)
    for batch in data:
        expected = live.records(batch)
        torch.testing.assert_close(table.records(batch).sum, expected.sum)
        chosen_only = TokenBatch(
            batch.input_ids[:2], batch.attention_mask[:2], batch.response_mask[:2], batch.example_ids, 1
        )
        torch.testing.assert_close(table.records(chosen_only).sum, expected.sum[:, :1])
