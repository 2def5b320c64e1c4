"""The fast path computes what the plain path computes: losses and gradients to 1e-5.

The plain path is one right-padded row per response (``layout=padded``); the fast path packs
pairs padding-free (``packed``) and shares each pair's prompt between its two responses
(``shared``). Both run the same real model (the tiny random Llama with SmolLM2's tokenizer) on
real HH-RLHF pairs through its chat template; only the layout differs.
"""

from __future__ import annotations

import copy

import pytest
import torch

from preftune.data import build_batch
from preftune.modeling import apply_lora, load_model, sequence_logprobs
from preftune.objectives import PairRecord, build

PAD = 2
OBJECTIVES = ["dpo", "exmate", "dpo(average=True)", "ipo(average=True) + 0.5*exmate"]
FAST = ["shared", "packed"]
TOL = 1e-5


def perturbed(model: torch.nn.Module, seed: int = 1, scale: float = 0.02) -> torch.nn.Module:
    """A copy of ``model`` with every trainable weight moved a little: a policy away from its reference."""
    policy = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale)
    return policy


def loss_and_grads(policy, reference, pairs, layout: str, spec: str):
    objective = build(spec)
    batch = build_batch(pairs, range(len(pairs)), PAD, layout)
    with torch.no_grad():
        ref_chosen, ref_rejected = sequence_logprobs(reference, batch, with_tokens=False)
    policy.zero_grad(set_to_none=True)
    chosen, rejected = sequence_logprobs(policy, batch, with_tokens=objective.needs_token_logps)
    out = objective(PairRecord(chosen, rejected, ref_chosen, ref_rejected))
    out.loss.mean().backward()
    grads = {n: p.grad.detach().clone() for n, p in policy.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


def assert_close(plain, fast) -> None:
    plain_loss, plain_grads = plain
    fast_loss, fast_grads = fast
    torch.testing.assert_close(fast_loss, plain_loss, atol=TOL, rtol=TOL)
    assert plain_grads.keys() == fast_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=TOL, rtol=TOL, msg=name)


@pytest.mark.parametrize("spec", OBJECTIVES)
def test_full_model(tiny_path, hh_pairs, spec: str) -> None:
    reference = load_model(tiny_path)
    policy = perturbed(reference)
    plain = loss_and_grads(policy, reference, hh_pairs[:8], "padded", spec)
    assert plain[0].abs().max() > 0 and any(g.abs().max() > 0 for g in plain[1].values())
    for layout in FAST:
        assert_close(plain, loss_and_grads(policy, reference, hh_pairs[:8], layout, spec))


@pytest.mark.parametrize("spec", OBJECTIVES)
def test_lora(tiny_path, hh_pairs, spec: str) -> None:
    torch.manual_seed(0)
    reference = load_model(tiny_path)
    policy = perturbed(apply_lora(copy.deepcopy(reference), rank=4, alpha=8))
    plain = loss_and_grads(policy, reference, hh_pairs[8:16], "padded", spec)
    assert all(("lora_" in n) for n in plain[1])
    for layout in FAST:
        assert_close(plain, loss_and_grads(policy, reference, hh_pairs[8:16], layout, spec))


def test_eager_attention_takes_an_additive_mask(tiny_path, hh_pairs) -> None:
    sdpa = load_model(tiny_path)
    eager = load_model(tiny_path)
    eager.config._attn_implementation = "eager"
    batch = build_batch(hh_pairs[:6], range(6), PAD, "shared")
    with torch.no_grad():
        a = sequence_logprobs(sdpa, batch, with_tokens=True)
        b = sequence_logprobs(eager, batch, with_tokens=True)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.tokens, y.tokens, atol=TOL, rtol=TOL)


def test_per_token_records_match(tiny_path, hh_pairs) -> None:
    model = load_model(tiny_path)
    with torch.no_grad():
        plain = sequence_logprobs(model, build_batch(hh_pairs, range(len(hh_pairs)), PAD, "padded"), with_tokens=True)
        fast = sequence_logprobs(model, build_batch(hh_pairs, range(len(hh_pairs)), PAD, "shared"), with_tokens=True)
    for x, y in zip(plain, fast, strict=True):
        assert torch.equal(x.mask, y.mask) and torch.equal(x.count, y.count)
        torch.testing.assert_close(y.tokens, x.tokens, atol=TOL, rtol=TOL)
