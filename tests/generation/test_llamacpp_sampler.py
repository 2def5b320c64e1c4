"""Sampling through llama.cpp from a GGUF file of the policy (``sampling.backend=llamacpp``).

What must hold: llama.cpp computes the policy's own next-token distribution (the GGUF's weights,
the q/k permutation included), samples it with preftune's settings and nothing else (no min-p,
penalties or reordered warpers), and the response ids are taken as llama.cpp sampled them.
xllamacpp is a test dependency (as for ``preftune serve``): these tests fail, never skip.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter

import pytest
import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

import preftune.modeling.gguf_export as gguf_export
from preftune.errors import PreftuneError
from preftune.generation.llamacpp_sampler import LlamaCppSampler, llamacpp_missing, samples_from_results
from preftune.generation.prompts import encode_prompt
from preftune.generation.sampling import SamplingConfig, sample
from preftune.modeling import apply_lora, load_model, load_tokenizer
from preftune.modeling.gguf_export import gguf_unsupported, gguf_vocab, write_gguf
from preftune.modeling.merged import merged_weights


@pytest.fixture(scope="module")
def tiny():
    """The tiny model (float32) with LoRA on every linear layer, B random (a trained adapter); its
    tokenizer; a prompt."""
    torch.manual_seed(0)
    model = apply_lora(load_model("tiny-random"), rank=4, alpha=8, target_modules="all-linear")
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    tokenizer = load_tokenizer("tiny-random")
    return model.eval(), tokenizer, encode_prompt(tokenizer, "What is 2 plus 2?")


def _llamacpp_logprobs(path, prompt, top: int = 20) -> dict[int, float]:
    """llama.cpp's top ``top`` next-token log-probabilities after ``prompt`` (raw model, no sampler)."""
    sampler = LlamaCppSampler("f32", threads=1)
    server = sampler.start(path, slots=1, width=len(prompt) + 2)
    body = {"prompt": prompt, "n_predict": 1, "n_probs": top, "samplers": [], "return_tokens": True}
    request = urllib.request.Request(
        f"{server.listening_address}/completion", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        probs = json.loads(response.read())["completion_probabilities"][0]["top_logprobs"]
    del server
    return {int(p["id"]): float(p["logprob"]) for p in probs}


def _policy_logprobs(model, prompt) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([prompt])).logits[0, -1].float(), -1)


def _largest_gap(model, tokenizer, prompt, tmp_path) -> float:
    config, vocab = model.get_base_model().config, gguf_vocab(tokenizer)
    path = write_gguf(tmp_path / "policy.gguf", config, merged_weights(model), vocab, "f32")
    ours, theirs = _policy_logprobs(model, prompt), _llamacpp_logprobs(path, prompt)
    return max(abs(theirs[i] - float(ours[i])) for i in theirs)


def test_llamacpp_computes_the_policys_next_token_distribution(tiny, tmp_path):
    model, tokenizer, prompt = tiny
    assert _largest_gap(model, tokenizer, prompt, tmp_path) < 0.02  # float16 KV cache in llama.cpp


def test_without_the_qk_permutation_the_distribution_is_wrong(tiny, tmp_path, monkeypatch):
    """The tolerance above catches a missing q/k permutation."""
    model, tokenizer, prompt = tiny
    monkeypatch.setattr(gguf_export, "permute_qk", lambda weight, heads: weight)
    assert _largest_gap(model, tokenizer, prompt, tmp_path) > 0.1


def _expected(model, prompt, config: SamplingConfig) -> torch.Tensor:
    """The first-token distribution transformers samples: temperature, then top-k, then top-p."""
    logits = _policy_logprobs(model, prompt)[None]
    warpers = LogitsProcessorList(
        [TemperatureLogitsWarper(config.temperature), TopKLogitsWarper(config.top_k), TopPLogitsWarper(config.top_p)]
    )
    return torch.softmax(warpers(torch.tensor([prompt]), logits)[0], -1)


def _first_tokens(model, tokenizer, prompt, config: SamplingConfig) -> list[int]:
    """2048 first tokens sampled by llama.cpp (128 requests of n=16, each seeded apart)."""
    samples = LlamaCppSampler("f32", threads=1)(model, tokenizer, [prompt] * 128, config)
    assert len(samples) == 2048 and all(len(s.response_ids) == 1 for s in samples)
    return [s.response_ids[0] for s in samples]


def test_sampled_first_tokens_follow_the_policys_warped_distribution(tiny):
    """Temperature 0.5, top_k 30, top_p 0.9 (24 tokens kept): no token outside transformers' kept set,
    and a total variation from its distribution below 0.1 (0.06 measured; sampling noise alone
    about 0.04). Measured when written: llama.cpp's own order (top-p before temperature) puts 73 of
    the 2048 samples outside the set, top_p left out 197."""
    model, tokenizer, prompt = tiny
    config = SamplingConfig(n=16, temperature=0.5, top_k=30, top_p=0.9, max_new_tokens=1, seed=0)
    counts = Counter(_first_tokens(model, tokenizer, prompt, config))
    expected = _expected(model, prompt, config)
    observed = torch.zeros_like(expected)
    for token, count in counts.items():
        observed[token] = count / 2048
    assert set(counts) <= set(torch.nonzero(expected).flatten().tolist())
    assert 0.5 * float((observed - expected).abs().sum()) < 0.1


def test_plain_sampling_is_not_truncated(tiny):
    """Temperature 1, no top-k/top-p (preftune's defaults): the mean log-probability of the sampled
    tokens is the policy's negative entropy within 4 standard errors (z = -0.2 measured). llama.cpp's
    default chain (top-k 40, min-p 0.05) gave z = 50 when this was written."""
    model, tokenizer, prompt = tiny
    logprobs = _policy_logprobs(model, prompt)
    entropy = -float((logprobs.exp() * logprobs).sum())
    spread = float(((logprobs + entropy) ** 2 * logprobs.exp()).sum().sqrt())
    tokens = _first_tokens(model, tokenizer, prompt, SamplingConfig(n=16, max_new_tokens=1, seed=1))
    mean = sum(float(logprobs[t]) for t in tokens) / len(tokens)
    assert abs(mean + entropy) / (spread / len(tokens) ** 0.5) < 4


def test_greedy_ids_are_the_policys_greedy_ids_as_sampled(tiny):
    """Greedy decoding gives the HF sampler's ids token for token: the ids are llama.cpp's as sampled
    (never text re-encoded), from the policy's weights with LoRA merged."""
    model, tokenizer, prompt = tiny
    config = SamplingConfig(n=2, temperature=0.0, max_new_tokens=16)
    prompts = [prompt, encode_prompt(tokenizer, "Say hello.")]
    theirs = LlamaCppSampler("f32", threads=1)(model, tokenizer, prompts, config)
    ours = sample(model, tokenizer, prompts, config)
    assert [s.response_ids for s in theirs] == [s.response_ids for s in ours]
    assert [s.prompt_index for s in theirs] == [0, 0, 1, 1]
    assert [s.text for s in theirs] == [
        tokenizer.decode(s.response_ids, skip_special_tokens=True).strip() for s in theirs
    ]


def test_results_keep_the_ids_given_and_refuse_an_unknown_stop(tiny):
    _, tokenizer, prompt = tiny
    results = [
        {"index": 1, "tokens": [5, 6, 2], "stop_type": "eos"},
        {"index": 0, "tokens": [7, 8], "stop_type": "limit"},
    ]
    samples = samples_from_results(results, 3, prompt, 2, {0, 2}, tokenizer)
    assert [(s.prompt_index, s.response_ids, s.finished) for s in samples] == [(3, [7, 8], False), (3, [5, 6, 2], True)]
    with pytest.raises(PreftuneError, match="eos"):  # stopped at an id preftune does not end a turn with
        samples_from_results([{"index": 0, "tokens": [5, 9], "stop_type": "eos"}], 0, prompt, 1, {0, 2}, tokenizer)
    with pytest.raises(PreftuneError, match="went on"):
        samples_from_results([{"index": 0, "tokens": [2, 9], "stop_type": "limit"}], 0, prompt, 1, {0, 2}, tokenizer)


def test_refusals(tiny, monkeypatch):
    from transformers import GPT2Config, LlamaConfig

    assert gguf_unsupported(LlamaConfig()) is None
    assert "Llama-architecture" in gguf_unsupported(GPT2Config())
    assert "rope scaling" in gguf_unsupported(LlamaConfig(rope_scaling={"rope_type": "linear", "factor": 2.0}))
    assert "biases" in gguf_unsupported(LlamaConfig(attention_bias=True))
    assert "one training process" in llamacpp_missing(LlamaConfig(), processes=2)
    real = __import__("importlib").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "xllamacpp" else real(name, *a))
    assert "xllamacpp is not installed" in llamacpp_missing()
    with pytest.raises(PreftuneError, match="xllamacpp"):
        LlamaCppSampler()
