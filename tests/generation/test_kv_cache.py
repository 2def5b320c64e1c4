"""The in-place KV cache: the same keys, values and samples as transformers' ``DynamicCache``, without copying."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from preftune.generation import SamplingConfig, sample
from preftune.generation import sampling as sampling_module
from preftune.generation.kv_cache import PreallocatedLayer, preallocated_cache
from preftune.modeling import load_model, load_tokenizer, tiny_model_path

QUESTIONS = ["Hi", "What colour is the sky on a clear day, and why?", "Name three fruits."]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(tiny_model_path())


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_model(tiny_model_path())


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    return [
        list(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        for q in QUESTIONS
    ]


def states(generator: torch.Generator, batch: int, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[batch, 2 heads, length, 4]`` keys and ``[..., 3]`` values (a value width of its own)."""
    return torch.randn(batch, 2, length, 4, generator=generator), torch.randn(batch, 2, length, 3, generator=generator)


def test_updates_hold_what_concatenation_holds_and_write_in_place() -> None:
    g = torch.Generator().manual_seed(0)
    layer = PreallocatedLayer(capacity=9)
    parts = [states(g, 2, t) for t in (5, 1, 1, 2)]
    pointers = []
    for k, v in parts:
        keys, values = layer.update(k, v)
        pointers.append(keys.data_ptr())
    torch.testing.assert_close(keys, torch.cat([k for k, _ in parts], dim=-2), rtol=0, atol=0)
    torch.testing.assert_close(values, torch.cat([v for _, v in parts], dim=-2), rtol=0, atol=0)
    assert layer.get_seq_length() == 9 and layer.buffers[0].shape == (2, 2, 9, 4)
    assert len(set(pointers)) == 1  # one buffer, written in place: no step copied the cache


def test_past_the_capacity_and_after_a_batch_repeat_the_filled_part_moves_once() -> None:
    g = torch.Generator().manual_seed(1)
    layer = PreallocatedLayer(capacity=4)
    first, second = states(g, 2, 3), states(g, 2, 3)
    layer.update(*first)
    keys, _ = layer.update(*second)  # 6 > 4 positions: new buffers holding the first 3
    torch.testing.assert_close(keys, torch.cat([first[0], second[0]], dim=-2), rtol=0, atol=0)
    layer.batch_repeat_interleave(2)  # transformers replaces the tensors: the buffers no longer back them
    third = states(g, 4, 1)
    keys, values = layer.update(*third)
    expected = torch.cat([torch.cat([first[0], second[0]], dim=-2).repeat_interleave(2, dim=0), third[0]], dim=-2)
    torch.testing.assert_close(keys, expected, rtol=0, atol=0)
    assert keys.shape == (4, 2, 7, 4) and values.shape == (4, 2, 7, 3)
    assert layer.buffers[0].data_ptr() == keys.data_ptr()


def test_the_cache_takes_the_models_layers_or_declines(model) -> None:
    cache = preallocated_cache(model, 32)
    assert isinstance(cache, DynamicCache)
    assert len(cache.layers) == model.config.num_hidden_layers
    assert all(isinstance(layer, PreallocatedLayer) and layer.capacity == 32 for layer in cache.layers)
    assert preallocated_cache(object(), 32) is None  # no config: generate keeps its own cache


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_samples_are_those_of_the_dynamic_cache(model, tokenizer, prompts, share, temperature) -> None:
    """fp32, prompts of three lengths left-padded in one batch, with and without the shared prompt pass."""
    config = SamplingConfig(n=2, temperature=temperature, max_new_tokens=12, batch_size=6, seed=3)
    before = sampling_module.SHARE_PREFILL
    try:
        sampling_module.SHARE_PREFILL = share
        ours = sample(model, tokenizer, prompts, config)
        sampling_module.PREALLOCATE_CACHE = False
        theirs = sample(model, tokenizer, prompts, config)
    finally:
        sampling_module.SHARE_PREFILL, sampling_module.PREALLOCATE_CACHE = before, True
    assert [s.response_ids for s in ours] == [s.response_ids for s in theirs]
    assert max(len(s.response_ids) for s in ours) > 1  # decoding steps ran on the cache


def test_decoding_logits_match_the_dynamic_cache(model, prompts) -> None:
    """Each step's logits through the in-place cache equal the dynamic cache's, to float32 rounding."""
    ids = torch.tensor([prompts[1]])
    logits = []
    name = sampling_module._cache_kwarg()  # `cache` in newer transformers, `past_key_values` before
    for cache in (preallocated_cache(model, ids.shape[1] + 6), DynamicCache(config=model.config)):
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                **{name: cache},
                max_new_tokens=6,
                min_new_tokens=6,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
        logits.append(torch.stack(out.logits))
    scale = logits[1].abs().max()
    assert (logits[0] - logits[1]).abs().max() <= 1e-5 * scale
