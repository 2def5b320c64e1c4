"""Choosing the reference of a stage: the model as it is when the stage starts.

``auto``/``previous``/``precomputed``: reference log-probs computed once for the training pairs
the run will read (a run of a few steps reads a few batches, not the whole set) and the held-out
pairs, with a progress bar, the batches shared out over the processes, and cached on disk (keyed
by weights, data, tokenisation and autocast precision), so the loop pays no reference forward
and a rerun pays nothing. ``adapter``: the same LoRA model with its adapters
disabled, per batch (no second copy). ``copy``: a frozen copy, per batch (full fine-tuning).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from preftune.data import Batch, Batcher, TokenizedGroup
from preftune.modeling import AdapterDisabledReference, FrozenCopyReference, ModelReference, PrecomputedReference
from preftune.modeling.reference import ReferenceLogProbs, cache_path, compute_table, save_table
from preftune.objectives import Objective
from preftune.progress import StepProgress
from preftune.run.config import RunConfig


class _Counting(ReferenceLogProbs):
    """A reference that advances a progress bar at each batch it scores (same values, same cache key)."""

    def __init__(self, inner: ReferenceLogProbs, progress: StepProgress) -> None:
        self.inner, self.progress = inner, progress

    def records(self, batch: Batch, with_tokens: bool = False):
        out = self.inner.records(batch, with_tokens)
        self.progress.advance({})
        return out

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


def _is_peft(model: Any) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def precompute(
    source: ReferenceLogProbs,
    items: Sequence[Any],
    batcher: Batcher,
    batch_size: int,
    accelerator: Accelerator,
    what: str,
    ids: Sequence[int] | None = None,
    group_size: int | None = None,
    autocast: bool = True,
    blocks: Sequence[Sequence[int]] | None = None,
) -> PrecomputedReference:
    """The reference of ``items[ids]`` (default all; ``group_size`` responses each), from the disk
    cache or computed with the batches shared out over the processes; the main process writes the
    cache. The table is keyed by these ids, the indices the trainer uses. ``autocast``: under the
    run's autocast, as the training steps compute the policy; off for the held-out pairs, which are
    scored in the weights' own precision (:meth:`Trainer.pair_logprobs`). ``blocks``: the batches to
    compute in (the training steps' own, :meth:`BatchPlan.first_reads`), instead of ``ids`` sorted
    by length in batches of ``batch_size``."""
    device = accelerator.device
    if blocks is None:
        # Examples of similar length batched together waste less padding; the table is keyed by id.
        order = sorted(range(len(items)) if ids is None else ids, key=lambda i: items[i].length)
        blocks = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    batches = [batcher([items[i] for i in block], block, group_size=group_size).to(device) for block in blocks]
    with torch.no_grad(), accelerator.autocast() if autocast else torch.autocast(device.type, enabled=False):
        path = cache_path(source, batches, None)  # the autocast precision is part of the key
        if path.is_file():
            return PrecomputedReference.load(path)
        mine = batches[accelerator.process_index :: accelerator.num_processes]
        progress = StepProgress(len(mine), enabled=accelerator.is_main_process, description=what)
        with progress:
            table = compute_table(_Counting(source, progress), mine) if mine else None
    parts = [t for t in gather_object([table]) if t is not None]
    merged = {name: torch.cat([t[name] for t in parts]) for name in parts[0]}
    if accelerator.is_main_process:
        save_table(merged, path)
    accelerator.wait_for_everyone()
    return PrecomputedReference(merged, path=path)


def live_reference(config: RunConfig, objective: Objective) -> str | None:
    """What a stage's reference must be whatever its setting says: ``copy`` under a reference refresh (a
    copy to move), ``live`` for an objective that scores mismatched pairs (``kto``: new rows every
    batch, which no precomputed table holds) or reads the reference's per-token log-probs (``ld_alpha``
    < 1: the table holds sums; per-token values would make it as large as the tokenised data, once more
    per response, for what one no-grad forward a step gives), None otherwise."""
    if config.ref_refresh.enabled:
        return "copy"
    return "live" if objective.needs_mismatched or objective.needs_reference_tokens else None


def reference_kind(setting: str, lora: bool, on_policy: bool = False, needs: str | None = None) -> str:
    """The reference a stage's ``reference`` setting means: on-policy, where each round's samples are
    new, or where ``needs`` is ``live`` (:func:`live_reference`), ``auto`` and ``previous`` are live
    (the adapters switched off under LoRA, else a frozen copy, both the model as the stage starts);
    where ``needs`` is ``copy``, a frozen copy; offline it is otherwise precomputed. Settings that
    cannot serve (``precomputed`` for ``kto`` or ``ld_alpha``, ``adapter`` for a refresh) are refused by the
    run's checks."""
    if needs == "copy" and setting in ("auto", "previous", "copy"):
        return "copy"
    if (on_policy or needs == "live") and setting in ("auto", "previous"):
        return "adapter" if lora else "copy"
    return setting


def make_reference(
    kind: str,
    objective: Objective,
    model: Any,
    config: RunConfig,
    train_items: Sequence[Any],
    eval_pairs: Sequence[TokenizedGroup],
    batcher: Batcher,
    accelerator: Accelerator,
    train_ids: Sequence[int] | None = None,
    group_size: int | None = None,
    train_blocks: Sequence[Sequence[int]] | None = None,
) -> tuple[Any, Any]:
    """(training reference or None when the objective needs none, held-out reference or None);
    precomputed references read the examples in the run's layout (``batcher``), for the training
    examples only those of ``train_ids`` (those the run's steps read; default all), ``group_size``
    responses each (as the training batches hold them), in ``train_blocks`` when given and the run
    autocasts (the training steps' own micro-batches: under bf16 another layout rounds differently, and
    the difference, ~0.05 nats a sequence on SmolLM2, would sit in every margin of the first pass)."""
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
        size = config.eval.batch_size
        # The training steps' own batches matter only where rounding depends on the layout (autocast);
        # in float32 the length-sorted batches of eval.batch_size waste less padding.
        blocks = train_blocks if accelerator.mixed_precision != "no" else None
        train_ref = (
            precompute(
                source,
                train_items,
                batcher,
                size,
                accelerator,
                "reference: training data",
                train_ids,
                group_size,
                blocks=blocks,
            )
            if objective.needs_reference
            else None
        )
        eval_ref = (
            precompute(source, eval_pairs, batcher, size, accelerator, "reference: held-out pairs", autocast=False)
            if eval_pairs
            else None
        )
        return train_ref, eval_ref
    return (live if objective.needs_reference else None), (live if eval_pairs else None)
