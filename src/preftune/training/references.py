"""Choosing the reference of a stage: the model as it is when the stage starts.

``auto``/``previous``/``precomputed``: reference log-probs computed once for the training and the
held-out pairs and cached on disk (keyed by weights, data and tokenisation), so the loop pays no
reference forward and a rerun pays nothing. ``adapter``: the same LoRA model with its adapters
disabled, per batch (no second copy). ``copy``: a frozen copy, per batch (full fine-tuning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator

from preftune.data import Batcher, TokenizedPair
from preftune.modeling import AdapterDisabledReference, FrozenCopyReference, ModelReference, PrecomputedReference
from preftune.objectives import Objective
from preftune.training.config import RunConfig


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _precompute(
    source: Any, pairs: Sequence[TokenizedPair], batcher: Batcher, batch_size: int, accelerator: Accelerator
):
    """Main process computes (or loads) the cache first; the others then load it."""
    device = accelerator.device
    # Pairs of similar length batched together waste less padding; the table is keyed by id.
    order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
    batches = [
        batcher([pairs[i] for i in block], block).to(device)
        for block in (order[k : k + batch_size] for k in range(0, len(order), batch_size))
    ]
    with accelerator.main_process_first(), torch.no_grad(), accelerator.autocast():
        return PrecomputedReference.build(source, batches)


def make_reference(
    kind: str,
    objective: Objective,
    model: Any,
    config: RunConfig,
    train_pairs: Sequence[TokenizedPair],
    eval_pairs: Sequence[TokenizedPair],
    batcher: Batcher,
    accelerator: Accelerator,
) -> tuple[Any, Any]:
    """(training reference or None when the objective needs none, held-out reference or None);
    precomputed references read the pairs in the run's layout (``batcher``)."""
    chunk = config.logit_chunk
    if kind == "adapter":
        live = AdapterDisabledReference(model, chunk_size=chunk)
    elif kind == "copy":
        live = FrozenCopyReference(model, chunk_size=chunk)
    else:  # auto, previous, precomputed
        source = (
            AdapterDisabledReference(model, chunk_size=chunk)
            if _is_peft(model)
            else ModelReference(model, chunk_size=chunk)
        )
        batch_size = config.eval.batch_size
        train_ref = (
            _precompute(source, train_pairs, batcher, batch_size, accelerator) if objective.needs_reference else None
        )
        eval_ref = _precompute(source, eval_pairs, batcher, batch_size, accelerator) if eval_pairs else None
        return train_ref, eval_ref
    return (live if objective.needs_reference else None), (live if eval_pairs else None)
