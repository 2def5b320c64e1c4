"""Gradient checkpointing: the same loss and gradients, with decoder layers really recomputed in the
backward pass, for full and LoRA models, padded and packed (4-D mask) batches, and lora.last_layers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from preftune.data.batch import PackedBatch
from preftune.modeling import (
    apply_lora,
    enable_gradient_checkpointing,
    gradient_checkpointing_enabled,
    load_model,
    sequence_logprobs,
)

from .batches import pipeline_batch

EXAMPLES = [
    ("Name a colour.", "Blue.", "I will not."),
    ("What is 2+2?", "4", "Five, obviously, and I am sure."),
    ("Say hello to my friend Ada.", "Hello, Ada!", "No."),
]


def _loss(model: nn.Module, batch) -> torch.Tensor:
    chosen, rejected = sequence_logprobs(model, batch, with_tokens=False)
    # a DPO-like mix of both sides plus a likelihood term, so every response token matters
    return -torch.nn.functional.logsigmoid(chosen.sum - rejected.sum).mean() - 0.1 * chosen.sum.mean()


def _count_layer_runs(model: nn.Module) -> list[int]:
    """Per decoder layer, how often its MLP starts. The MLP runs inside the layer's forward, which is what
    checkpointing re-executes (transformers wraps ``forward``, so hooks on the layer itself run once); a
    pre-hook, since the recomputation stops as soon as it has what the backward pass needs."""
    layers = model.get_base_model().model.layers if hasattr(model, "peft_config") else model.model.layers
    counts = [0] * len(layers)
    for index, layer in enumerate(layers):
        layer.mlp.register_forward_pre_hook(lambda *_, i=index: counts.__setitem__(i, counts[i] + 1))
    return counts


def _perturb_lora(model: nn.Module) -> None:
    with torch.no_grad():  # LoRA starts as the identity (B = 0) from a random A; make both matter, and repeatable
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(len(name)))


def _loss_grads_runs(model: nn.Module, batch, checkpointed: bool, lora_first: bool | None = None):
    """Loss, gradients of the trainable parameters and per-layer MLP runs over one forward and backward."""
    if checkpointed and lora_first is False:
        enable_gradient_checkpointing(model)
    if lora_first is not None:
        model = apply_lora(model, rank=4, last_layers=1)
        _perturb_lora(model)
    if checkpointed and lora_first is not False:
        enable_gradient_checkpointing(model)
    assert gradient_checkpointing_enabled(model) == checkpointed
    model.train()  # checkpointing acts in training mode only
    runs = _count_layer_runs(model)
    loss = _loss(model, batch)
    forward_runs = list(runs)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, forward_runs, runs


@pytest.mark.parametrize("layout", ["padded", "shared"])
def test_full_model_same_loss_and_gradients_with_layers_recomputed(tiny_path: Path, tokenizer, layout: str) -> None:
    batch = pipeline_batch(tokenizer, EXAMPLES, layout)
    assert isinstance(batch, PackedBatch) == (layout == "shared")  # the shared layout takes a 4-D mask
    plain = _loss_grads_runs(load_model(tiny_path).double(), batch, checkpointed=False)
    checkpointed = _loss_grads_runs(load_model(tiny_path).double(), batch, checkpointed=True)
    assert torch.allclose(plain[0], checkpointed[0], atol=1e-5, rtol=0)
    assert plain[1].keys() == checkpointed[1].keys() and len(plain[1]) > 0
    for name, grad in plain[1].items():
        assert grad.abs().sum() > 0 or "embed" in name
        assert torch.allclose(grad, checkpointed[1][name], atol=1e-5, rtol=0), name
    assert plain[2] == plain[3] == [1, 1]  # without checkpointing each layer runs once
    assert checkpointed[2] == [1, 1] and checkpointed[3] == [2, 2]  # with it, again in the backward pass


@pytest.mark.parametrize("lora_first", [True, False])
def test_lora_last_layers_recomputes_only_the_adapted_layers(tiny_path: Path, tokenizer, lora_first: bool) -> None:
    batch = pipeline_batch(tokenizer, EXAMPLES, "shared")
    plain = _loss_grads_runs(load_model(tiny_path).double(), batch, checkpointed=False, lora_first=True)
    checkpointed = _loss_grads_runs(load_model(tiny_path).double(), batch, checkpointed=True, lora_first=lora_first)
    assert torch.allclose(plain[0], checkpointed[0], atol=1e-5, rtol=0)
    assert plain[1].keys() == checkpointed[1].keys() and all("lora_" in n for n in plain[1])
    for name, grad in plain[1].items():
        assert grad.abs().sum() > 0 and torch.allclose(grad, checkpointed[1][name], atol=1e-5, rtol=0), name
    # The backward pass stops at the adapted layer: layer 0 runs once, layer 1 again in the backward pass.
    # (An input-embedding requires_grad hook, which reentrant checkpointing needs, would rerun layer 0 too.)
    assert plain[3] == [1, 1] and checkpointed[3] == [1, 2]


def test_cache_is_off_and_no_grad_passes_run_once(tiny_path: Path, tokenizer) -> None:
    model = enable_gradient_checkpointing(load_model(tiny_path))
    assert model.config.use_cache is False and gradient_checkpointing_enabled(model)
    model.train()
    runs = _count_layer_runs(model)
    with torch.no_grad():  # a reference pass: nothing to recompute
        sequence_logprobs(model, pipeline_batch(tokenizer, EXAMPLES, "packed"), with_tokens=False)
    assert runs == [1, 1]
