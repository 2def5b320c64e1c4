"""Sampling from the tiny random Llama (SmolLM2's tokenizer): padding, order, stopping, seeds, alignment."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from preftune.data.tokenize import end_of_turn_ids
from preftune.errors import PreftuneError, SpecError
from preftune.generation import Sample, SamplingConfig, greedy_responses, sample
from preftune.generation.sampling import _trim
from preftune.modeling import apply_lora, load_model, load_tokenizer, tiny_model_path

QUESTIONS = ["Hi", "What colour is the sky on a clear day, and why?", "Name three fruits."]


@pytest.fixture(scope="module")
def tiny_path() -> Path:
    return tiny_model_path()


@pytest.fixture(scope="module")
def tokenizer(tiny_path: Path):
    return load_tokenizer(tiny_path)


@pytest.fixture(scope="module")
def model(tiny_path: Path) -> torch.nn.Module:
    """Shared by the tests that leave it as they found it (``sample`` restores mode and cache flag)."""
    return load_model(tiny_path)


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    """Chat-template prompts of three different lengths, so batches need left padding."""
    out = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True, return_dict=True
        )["input_ids"]
        for q in QUESTIONS
    ]
    assert len({len(p) for p in out}) == len(out)
    return [list(p) for p in out]


@pytest.fixture(scope="module")
def stops(tokenizer) -> set[int]:
    return end_of_turn_ids(tokenizer)


def one_at_a_time(model, tokenizer, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy ids from ``generate`` on the prompt alone (no padding), stopping at any end-of-turn id."""
    ids = torch.tensor([prompt])
    out = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=sorted(end_of_turn_ids(tokenizer)),
        pad_token_id=tokenizer.pad_token_id,
    )
    return out[0, len(prompt) :].tolist()


def check_stopping(s: Sample, stops: set[int], max_new_tokens: int) -> None:
    assert 1 <= len(s.response_ids) <= max_new_tokens
    if s.finished:
        assert s.response_ids[-1] in stops
        assert not stops & set(s.response_ids[:-1])
    else:
        assert len(s.response_ids) == max_new_tokens
        assert not stops & set(s.response_ids)


def teacher_forced_logps(model, s: Sample) -> torch.Tensor:
    """``[R, V]`` log-softmax at the positions that predict the response tokens (prompt + response in one pass)."""
    ids = torch.tensor([s.prompt_ids + s.response_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
    start = len(s.prompt_ids) - 1
    return logits[start : start + len(s.response_ids)].log_softmax(-1)


def test_batched_left_padded_greedy_equals_one_prompt_at_a_time(model, tokenizer, prompts) -> None:
    # batch_size 4 with n=2: the first batch holds prompts 0 and 1 (different lengths), the second 1 and 2.
    samples = sample(model, tokenizer, prompts, SamplingConfig(n=2, temperature=0, max_new_tokens=8, batch_size=4))
    for s in samples:
        assert s.response_ids == one_at_a_time(model, tokenizer, prompts[s.prompt_index], 8)


def test_greedy_responses_still_gives_the_greedy_text(model, tokenizer, prompts) -> None:
    samples = sample(model, tokenizer, prompts, SamplingConfig(temperature=0, max_new_tokens=6, batch_size=3))
    assert not any(s.finished for s in samples)  # else greedy_responses (EOS only) may run on past <|endoftext|>
    assert greedy_responses(model, tokenizer, prompts, 6) == [s.text for s in samples]


def test_order_counts_and_prompt_ids(model, tokenizer, prompts, stops) -> None:
    config = SamplingConfig(n=3, temperature=1.0, max_new_tokens=3, batch_size=4, seed=0)
    samples = sample(model, tokenizer, prompts, config)
    assert [s.prompt_index for s in samples] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert all(s.prompt_ids == prompts[s.prompt_index] for s in samples)
    for s in samples:
        check_stopping(s, stops, 3)
        assert s.text == tokenizer.decode(s.response_ids, skip_special_tokens=True).strip()
    assert not any(s.finished for s in samples)  # a random model does not stop within 3 tokens at this seed
    assert sample(model, tokenizer, [], config) == []


def test_trim_cuts_after_the_first_stop_id() -> None:
    generated = torch.tensor(
        [
            [5, 2, 2, 2],  # stopped at 2, then padded with 2 (pad == EOS, as in SmolLM2)
            [0, 7, 2, 9],  # stopped at once at another stop id
            [5, 6, 7, 8],  # cut by max_new_tokens
            [5, 6, 2, 99],  # stopped, padded with a pad id that is not a stop id
        ]
    )
    assert _trim(generated, [0, 2]) == [([5, 2], True), ([0], True), ([5, 6, 7, 8], False), ([5, 6, 2], True)]


def test_a_forced_end_of_turn_finishes_only_that_row(model, tokenizer, prompts, stops) -> None:
    """Row 0 is made to emit ``<|endoftext|>`` (a stop id that is neither the model's EOS nor pad) at step 3."""
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert endoftext in stops and endoftext not in (tokenizer.eos_token_id, tokenizer.pad_token_id)
    calls = []

    def force(module, inputs, output):
        if len(calls) == 3:  # call 0 is the prefill (first token); call k gives token k
            output[0, -1, endoftext] = output[0, -1].max() + 100.0
        calls.append(1)
        return output

    config = SamplingConfig(temperature=0, max_new_tokens=6, batch_size=3)
    greedy = sample(model, tokenizer, prompts, config)
    handle = model.get_output_embeddings().register_forward_hook(force)
    try:
        forced = sample(model, tokenizer, prompts, config)
    finally:
        handle.remove()
    assert forced[0].finished and forced[0].response_ids == [*greedy[0].response_ids[:3], endoftext]
    assert forced[0].text == tokenizer.decode(greedy[0].response_ids[:3], skip_special_tokens=True).strip()
    assert [s.response_ids for s in forced[1:]] == [s.response_ids for s in greedy[1:]]
    for s in forced:
        check_stopping(s, stops, 6)


def test_generation_stops_once_every_row_has_finished(model, tokenizer, prompts) -> None:
    """Every row emits ``<|endoftext|>`` (not the model's own EOS) first: one forward pass, not six."""
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    calls = []

    def force(module, inputs, output):
        calls.append(1)
        output[:, -1, endoftext] = output[:, -1].max() + 100.0
        return output

    handle = model.get_output_embeddings().register_forward_hook(force)
    try:
        samples = sample(model, tokenizer, prompts, SamplingConfig(temperature=0, max_new_tokens=6, batch_size=3))
    finally:
        handle.remove()
    assert [(s.response_ids, s.finished, s.text) for s in samples] == [([endoftext], True, "")] * len(prompts)
    assert len(calls) == 1


def test_seeds_reproduce_and_leave_the_global_rng_alone(model, tokenizer, prompts) -> None:
    config = SamplingConfig(n=2, temperature=1.0, max_new_tokens=3, batch_size=6, seed=7)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = sample(model, tokenizer, prompts, config)
    assert torch.equal(torch.get_rng_state(), before)
    again = sample(model, tokenizer, prompts, config)
    other = sample(model, tokenizer, prompts, SamplingConfig(**{**config.__dict__, "seed": 8}))
    assert first == again
    assert [s.response_ids for s in first] != [s.response_ids for s in other]
    assert len({tuple(s.response_ids) for s in first}) > len(prompts)  # the n samples of a prompt differ
    # batches of the same prompt get different seeds, so they do not repeat each other
    repeats = sample(model, tokenizer, prompts[:1], SamplingConfig(n=4, max_new_tokens=3, batch_size=2, seed=7))
    assert len({tuple(s.response_ids) for s in repeats}) == 4


def test_mode_and_cache_flag_are_restored(model, tokenizer, prompts) -> None:
    model.train()
    model.config.use_cache = False
    try:
        sample(model, tokenizer, prompts[:1], SamplingConfig(max_new_tokens=2, seed=0))
        assert model.training and model.config.use_cache is False
    finally:
        model.eval()
        model.config.use_cache = True


def test_greedy_ids_are_the_teacher_forced_argmax(model, tokenizer, prompts) -> None:
    for s in sample(model, tokenizer, prompts, SamplingConfig(temperature=0, max_new_tokens=8, batch_size=3)):
        logps = teacher_forced_logps(model, s)
        taken = logps.gather(-1, torch.tensor(s.response_ids)[:, None]).squeeze(-1)
        assert torch.isfinite(taken).all() and math.isfinite(taken.sum().item())
        assert logps.argmax(-1).tolist() == s.response_ids


def test_sampled_ids_lie_in_the_teacher_forced_top_k(model, tokenizer, prompts) -> None:
    config = SamplingConfig(n=2, temperature=1.0, top_k=5, max_new_tokens=6, batch_size=6, seed=3)
    for s in sample(model, tokenizer, prompts, config):
        logps = teacher_forced_logps(model, s)
        top = logps.topk(5, dim=-1).indices
        assert all(token in row for token, row in zip(s.response_ids, top.tolist(), strict=True))
        assert torch.isfinite(logps.gather(-1, torch.tensor(s.response_ids)[:, None])).all()


def test_a_peft_model_samples_like_its_base(tiny_path, tokenizer, prompts) -> None:
    config = SamplingConfig(temperature=0, max_new_tokens=4, batch_size=3)
    base = sample(load_model(tiny_path), tokenizer, prompts, config)
    wrapped = apply_lora(load_model(tiny_path), rank=4)  # LoRA's B starts at zero: same function
    wrapped.train()
    assert [s.response_ids for s in sample(wrapped, tokenizer, prompts, config)] == [s.response_ids for s in base]
    assert wrapped.training


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n", 0, "n must be at least 1"),
        ("temperature", -0.1, "temperature must be ≥ 0"),
        ("temperature", float("nan"), "temperature must be ≥ 0"),
        ("top_p", 0.0, "top_p must be in (0, 1]"),
        ("top_p", 1.5, "top_p must be in (0, 1]"),
        ("top_k", -1, "top_k must be ≥ 0"),
        ("max_new_tokens", 0, "max_new_tokens must be at least 1"),
        ("batch_size", 0, "batch_size must be at least 1"),
    ],
)
def test_bad_configs_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(SpecError, match=f"^sampling: {message}".replace("(", r"\(").replace(")", r"\)")):
        SamplingConfig(**{field: value})


def test_an_empty_prompt_is_refused(model, tokenizer, prompts) -> None:
    with pytest.raises(PreftuneError, match="prompt 1 is empty"):
        sample(model, tokenizer, [prompts[0], []], SamplingConfig(max_new_tokens=2))


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_a_prompts_samples_share_one_prefill_and_sample_as_before(model, tokenizer, prompts, temperature) -> None:
    """Each distinct prompt's KV cache computed once and repeated for its n rows: the same samples
    as every row's own prefill (fp32), prompts of three lengths left-padded in one batch."""
    from preftune.generation import sampling

    config = SamplingConfig(n=3, temperature=temperature, max_new_tokens=10, batch_size=9, seed=5)
    shared = sample(model, tokenizer, prompts, config)
    try:
        sampling.SHARE_PREFILL = False
        alone = sample(model, tokenizer, prompts, config)
    finally:
        sampling.SHARE_PREFILL = True
    assert [s.response_ids for s in shared] == [s.response_ids for s in alone]
    ids, mask = sampling._left_pad([p for p in prompts for _ in range(3)], tokenizer.pad_token_id, "cpu")
    cache = sampling._shared_prefill(model, ids, mask, 3)
    assert cache is not None and cache.get_seq_length() == ids.shape[1] - 1
    assert sampling._shared_prefill(model, ids[1:7], mask[1:7], 3) is None  # rows not whole groups of equal prompts
