"""Sampling from a copy of the policy (``sampling.dtype``): the copy takes the policy's current
weights (LoRA merged) before each call and leaves the policy as it was."""

from __future__ import annotations

import math

import pytest
import torch

from preftune.errors import PreftuneError
from preftune.generation.copy_sampler import CopySampler, copy_sampler_for
from preftune.generation.prompts import encode_prompt
from preftune.generation.sampling import SamplingConfig, sample
from preftune.modeling import apply_lora, load_model, load_tokenizer
from preftune.modeling.merged import merged_weights

GREEDY = SamplingConfig(n=2, temperature=0.0, max_new_tokens=12)


@pytest.fixture
def policy():
    """The tiny model with LoRA on every linear layer, its B matrices random (a trained adapter)."""
    torch.manual_seed(0)
    model = apply_lora(load_model("tiny-random"), rank=4, alpha=8, target_modules="all-linear")
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    tokenizer = load_tokenizer("tiny-random")
    prompts = [encode_prompt(tokenizer, text) for text in ("What is 2 plus 2?", "Say hello.", "Name a colour.")]
    return model, tokenizer, prompts


def test_a_float32_copy_samples_what_the_policy_samples(policy):
    model, tokenizer, prompts = policy
    own = sample(model, tokenizer, prompts, GREEDY)
    copied = CopySampler(torch.float32)(model, tokenizer, prompts, GREEDY)
    assert [s.response_ids for s in copied] == [s.response_ids for s in own]
    assert [s.finished for s in copied] == [s.finished for s in own]


def test_the_bf16_copy_follows_the_policy_and_leaves_it_untouched(policy):
    model, tokenizer, prompts = policy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sampler = CopySampler(torch.bfloat16)
    samples = sampler(model, tokenizer, prompts, GREEDY)
    assert len(samples) == 6 and all(p.dtype == torch.bfloat16 for p in sampler.copy.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    with torch.no_grad():  # "a training step": the adapter moves
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.add_(0.1)
    sampler(model, tokenizer, prompts, GREEDY)
    copy = sampler.copy.state_dict()
    x = torch.randn(3, 256)
    for name, tensor in merged_weights(model):
        if name in sampler.packed:  # a packed weight: the layer multiplies by the merged weight
            layer = sampler.packed[name]
            got = layer(x[:, : layer.in_features].to(torch.bfloat16)).float()
            want = x[:, : layer.in_features] @ tensor.to(torch.bfloat16).float().T
            assert (got - want).norm() <= 1e-2 * want.norm(), name
        else:
            assert torch.equal(copy[name], tensor.to(torch.bfloat16)), name
    assert not any(p.requires_grad for p in sampler.copy.parameters())


def test_which_sampler_the_setting_gives(monkeypatch):
    from preftune.modeling import precision

    assert copy_sampler_for("float32", "float32") is None
    assert copy_sampler_for("bfloat16", "bfloat16") is None  # the policy is bf16 already: no copy
    assert isinstance(copy_sampler_for("bfloat16", "float32"), CopySampler)
    monkeypatch.setattr(precision, "auto_mixed_precision", lambda: "bf16")
    assert copy_sampler_for("auto", "float32").dtype == torch.bfloat16
    monkeypatch.setattr(precision, "auto_mixed_precision", lambda: "no")  # bf16 would be emulated
    assert copy_sampler_for("auto", "float32") is None
    with pytest.raises(PreftuneError, match=r"sampling\.dtype must be one of auto, float32, bfloat16"):
        copy_sampler_for("fp8", "float32")


def test_the_bf16_copy_draws_first_tokens_with_the_policys_probabilities(policy):
    """The copy samples the policy (LoRA merged), not the base model: its first tokens' frequencies
    among the float32 policy's top 5 match the policy's own softmax over them, within 5 standard
    errors plus 0.02 for bfloat16's rounding of the logits."""
    model, tokenizer, prompts = policy
    prompt, k, n = prompts[1], 5, 1000
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
        with model.disable_adapter():
            base_logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
    top = logits.topk(k + 1)
    # the 5th and 6th logits are far apart next to bf16's resolution at this size (1/32), so the copy's top 5 are these
    assert top.values[k - 1] - top.values[k] > 0.2
    expected = top.values[:k].softmax(-1)
    assert not torch.equal(top.indices[:k], base_logits.topk(k).indices)  # the adapter moved the top 5
    samples = CopySampler(torch.bfloat16)(
        model, tokenizer, [prompt], SamplingConfig(n=n, top_k=k, max_new_tokens=1, batch_size=250, seed=3)
    )
    firsts = [s.response_ids[0] for s in samples]
    assert set(firsts) <= set(top.indices[:k].tolist())
    for token, p in zip(top.indices[:k].tolist(), expected.tolist(), strict=True):
        assert abs(firsts.count(token) / n - p) < 5 * math.sqrt(p * (1 - p) / n) + 0.02
