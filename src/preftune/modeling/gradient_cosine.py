"""P3's Lemma 6.2 on real batches: the cosine between ∇θ log π(y_w|x) and ∇θ log π(y_l|x).

Tajwar et al. (2024), *Preference Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data*,
Lemma 6.2: a negative gradient (pushing log π(y_l|x) down) also raises log π(y_w|x) when the two
gradients point away from each other, cos(∇θ S(y_w), ∇θ S(y_l)) ≤ 0 (docs/methods.md §3). Here the
cosine is measured for a given model and batch, with respect to the parameters the trainer
updates: the LoRA adapters under LoRA, every weight under full fine-tuning.

This needs the model (a forward and backward pass), so it lives in :mod:`preftune.modeling`, not in
:mod:`preftune.analysis`, whose gradient analysis (P1) works on log-prob inputs and imports
nothing but the objectives.

Per-pair gradients are taken by a loop, two ``torch.autograd.grad`` calls per pair on one forward
pass of the batch, rather than with ``torch.func`` (``vmap`` over ``grad``): the log-prob path is
not vmappable (``nonzero`` and boolean-mask gathers make shapes depend on the data, packed batches
build their attention masks from the data, and peft's modules hold state that ``functional_call``
must rebuild), and vmapped per-pair gradients would hold 2·B copies of the trainable parameters'
gradient at once, where the loop holds two.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from preftune.data.batch import Batch
from preftune.errors import PreftuneError
from preftune.modeling.logprobs import response_logprobs


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters an optimiser of ``model`` updates (``requires_grad``): LoRA adapters under LoRA."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise PreftuneError("the model has no trainable parameters: no gradient to compare")
    return params


def gradient_cosines(
    model: nn.Module,
    batch: Batch,
    *,
    chunk_size: int = 1024,
    checkpoint_head: bool = False,
) -> Tensor:
    """Per pair, the cosine between the gradients of log π(y_w|x) and of log π(y_l|x) (P3, Lemma 6.2).

    For each example i of the batch, with chosen y_w = response 0 and rejected y_l = response 1,
    cos_i = ⟨g_w, g_l⟩ / (‖g_w‖ ‖g_l‖), where g = ∇θ S(y) is the gradient of the summed response
    log-probability S (docs/methods.md §1) over the model's trainable parameters θ (those with
    ``requires_grad``: the adapters of a peft LoRA model, every weight otherwise), all of them
    flattened into one vector. A cosine ≤ 0 means that pushing y_l down pushes y_w up.

    The model runs in eval mode (no dropout) under autograd, whatever the caller's grad mode; each
    module's train/eval flag is restored afterwards and ``.grad`` fields are never written (the
    gradients come from ``torch.autograd.grad``). Run it under the autocast the model trains with
    to measure the gradients training sees.

    Cost: one forward pass of the batch and 2·B backward passes through it (each over the whole
    batch's graph), so a batch of one pair is the cheapest per pair.

    Args:
        model: a transformers causal LM, or a peft model wrapping one.
        batch: B examples with C ≥ 2 responses each (padded or packed); responses beyond the
            second are ignored (a group's extra responses still run through the forward pass).
        chunk_size: response positions per LM-head call (see :func:`response_logprobs`).
        checkpoint_head: recompute the head's logits in each backward pass instead of keeping them.
    Returns:
        ``[B]`` float64 cosines on the CPU, in [-1, 1]; NaN for a pair where a gradient is zero.
    """
    if batch.group_size < 2:
        raise PreftuneError(f"gradient cosines need a chosen and a rejected response, not {batch.group_size}")
    params = trainable_parameters(model)
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            sums = response_logprobs(
                model, batch, with_tokens=False, chunk_size=chunk_size, checkpoint_head=checkpoint_head
            ).sum
            n = sums.shape[0]
            cosines = [_pair_cosine(sums[i, 0], sums[i, 1], params, keep_graph=i < n - 1) for i in range(n)]
    finally:
        for module, training in modes:
            module.training = training
    return torch.tensor(cosines, dtype=torch.float64)


def _pair_cosine(chosen: Tensor, rejected: Tensor, params: list[nn.Parameter], keep_graph: bool) -> float:
    """cos(∇θ ``chosen``, ∇θ ``rejected``) over ``params``, accumulated in float64; ``keep_graph``:
    keep the forward's graph for a later pair."""
    g_w = torch.autograd.grad(chosen, params, retain_graph=True, allow_unused=True)
    g_l = torch.autograd.grad(rejected, params, retain_graph=keep_graph, allow_unused=True)
    dot = norm_w = norm_l = torch.zeros((), dtype=torch.float64, device=chosen.device)
    for a, b in zip(map(_wide, g_w), map(_wide, g_l), strict=True):
        if a is not None:
            norm_w = norm_w + (a * a).sum(dtype=torch.float64)
        if b is not None:
            norm_l = norm_l + (b * b).sum(dtype=torch.float64)
        if a is not None and b is not None:
            dot = dot + (a * b).sum(dtype=torch.float64)
    return float(dot / (norm_w.sqrt() * norm_l.sqrt()))


def _wide(grad: Tensor | None) -> Tensor | None:
    """A half-precision gradient in float32 (its products would round); float32 and float64 as they are."""
    if grad is None or grad.dtype in (torch.float32, torch.float64):
        return grad
    return grad.float()
