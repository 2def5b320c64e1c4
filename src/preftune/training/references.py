"""Choosing the reference of a stage: the model as it is when the stage starts.

``auto``/``previous``/``precomputed``: reference log-probs computed once for the training pairs
the run will read (a run of a few steps reads a few batches, not the whole set) and the held-out
pairs, with a progress bar, and cached on disk (keyed by weights, data and tokenisation), so the
loop pays no reference forward and a rerun pays nothing. ``adapter``: the same LoRA model with its adapters
disabled, per batch (no second copy). ``copy``: a frozen copy, per batch (full fine-tuning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator

from preftune.data import Batch, Batcher, TokenizedPair
from preftune.modeling import AdapterDisabledReference, FrozenCopyReference, ModelReference, PrecomputedReference
from preftune.modeling.reference import ReferenceLogProbs
from preftune.objectives import Objective
from preftune.training.config import RunConfig
from preftune.training.progress import StepProgress


class _Counting(ReferenceLogProbs):
    """A reference that advances a progress bar at each batch it scores (same values, same cache key)."""

    def __init__(self, inner: ReferenceLogProbs, progress: StepProgress) -> None:
        self.inner, self.progress = inner, progress

    def __call__(self, batch: Batch):
        out = self.inner(batch)
        self.progress.advance({})
        return out

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _precompute(
    source: Any,
    pairs: Sequence[TokenizedPair],
    batcher: Batcher,
    batch_size: int,
    accelerator: Accelerator,
    what: str,
    ids: Sequence[int] | None = None,
):
    """Main process computes (or loads) the cache first; the others then load it. ``ids``: the
    pairs to score (default all); the table is keyed by these ids, the indices the trainer uses."""
    device = accelerator.device
    # Pairs of similar length batched together waste less padding; the table is keyed by id.
    order = sorted(range(len(pairs)) if ids is None else ids, key=lambda i: pairs[i].length)
    batches = [
        batcher([pairs[i] for i in block], block).to(device)
        for block in (order[k : k + batch_size] for k in range(0, len(order), batch_size))
    ]
    progress = StepProgress(len(batches), enabled=accelerator.is_main_process, description=what)
    with progress, accelerator.main_process_first(), torch.no_grad(), accelerator.autocast():
        return PrecomputedReference.build(_Counting(source, progress), batches)


def make_reference(
    kind: str,
    objective: Objective,
    model: Any,
    config: RunConfig,
    train_pairs: Sequence[TokenizedPair],
    eval_pairs: Sequence[TokenizedPair],
    batcher: Batcher,
    accelerator: Accelerator,
    train_ids: Sequence[int] | None = None,
) -> tuple[Any, Any]:
    """(training reference or None when the objective needs none, held-out reference or None);
    precomputed references read the pairs in the run's layout (``batcher``), for the training
    pairs only those of ``train_ids`` (the pairs the run's steps read; default all)."""
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
            _precompute(source, train_pairs, batcher, batch_size, accelerator, "reference: training pairs", train_ids)
            if objective.needs_reference
            else None
        )
        eval_ref = (
            _precompute(source, eval_pairs, batcher, batch_size, accelerator, "reference: held-out pairs")
            if eval_pairs
            else None
        )
        return train_ref, eval_ref
    return (live if objective.needs_reference else None), (live if eval_pairs else None)
