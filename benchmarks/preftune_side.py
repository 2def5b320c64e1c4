"""The preftune side of ``compare_trl.py``: the same pairs, model, batch and steps, through preftune's trainer.

``run(workload, steps, seed, variant, precision)`` builds what ``preftune train`` builds and drives the same public
API: tokenised pairs, the model, LoRA, the reference, a :class:`preftune.training.loop.Trainer`, a
:class:`preftune.training.sources.DatasetSource` over the pairs with the stage's batch plan
(:func:`preftune.training.loop.make_plan`), and ``trainer.fit(source, hooks=[Callbacks([...])])``. It trains ``steps``
optimiser steps over exactly the pairs TRL gets (one epoch of ``steps * batch`` pairs; preftune visits them in its
seeded order, TRL in file order), and returns the fields of the TRL side plus ``reference_seconds``.

Reference work counts: by default the reference log-probs are precomputed once for these pairs (a cache in a fresh
temporary folder, so never a hit from an earlier run), and that time is added to ``seconds``, the figure pairs/s is
computed from. Checkpoints and held-out evaluation are off, as on the TRL side (``save_strategy="no"``): the only hook
is the step timer, so nothing is written.

Precision (``fp32`` or ``bf16``, see :mod:`workloads`): float32 weights either way; ``bf16`` sets
``Accelerator(mixed_precision="bf16")`` and ``OptimConfig(mixed_precision="bf16")``, as ``preftune train`` does with
``optim.mixed_precision: bf16``, so the reference precompute and every step run under bf16 autocast.

Variants, each one lever changed from the default (``shared`` layout, precomputed reference, padding-free):

- ``padded``: one right-padded row per response, as TRL lays a batch out (no packing, no prompt sharing);
- ``packed``: padding-free packing, but each response with its own copy of the prompt (packing alone);
- ``grouped``: ``padded`` with length-grouped batches (less padding without packing);
- ``live-ref``: the reference computed inside every step (LoRA: adapters disabled; full: a frozen copy).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from workloads import (
    BETA,
    LEARNING_RATE,
    LORA_ALPHA,
    LORA_DROPOUT,
    LORA_R,
    LORA_TARGET_MODULES,
    AutocastProbe,
    Workload,
    check_precision,
)

VARIANTS = {
    "default": {"layout": "shared"},
    "padded": {"layout": "padded"},
    "packed": {"layout": "packed"},
    "grouped": {"layout": "padded", "group_by_length": True},
    "live-ref": {"layout": "shared", "live_reference": True},
}


def run(workload: Workload, steps: int, seed: int, variant: str, precision: str) -> dict[str, Any]:
    """Train ``steps`` steps of ``workload`` with preftune in ``precision``; timings and counts as in
    ``compare_trl.py``."""
    if variant not in VARIANTS:
        raise SystemExit(f"unknown preftune variant '{variant}' (known: {', '.join(VARIANTS)})")
    check_precision(precision)
    settings = {"group_by_length": False, "live_reference": False, **VARIANTS[variant]}
    began = time.perf_counter()
    from accelerate.utils import set_seed
    from workloads import benchmark_pairs

    from preftune.data import Batcher, load_preference_data, tokenize_examples
    from preftune.modeling import (
        AdapterDisabledReference,
        FrozenCopyReference,
        ModelReference,
        PrecomputedReference,
        apply_lora,
        load_model,
        load_tokenizer,
    )
    from preftune.modeling.attention import attention_length
    from preftune.objectives import build
    from preftune.training import EvalConfig, OptimConfig, make_accelerator
    from preftune.training.hooks import Callbacks
    from preftune.training.loop import Trainer, make_plan, responses_read
    from preftune.training.sources import DatasetSource

    imported = time.perf_counter()
    cuda = torch.cuda.is_available()
    mixed_precision = "bf16" if precision == "bf16" else "no"
    model_path = workload.model_path()
    tokenizer = load_tokenizer(model_path)
    with tempfile.TemporaryDirectory() as tmp:
        rows = Path(tmp) / "pairs.jsonl"
        rows.write_text("".join(json.dumps(p) + "\n" for p in benchmark_pairs(workload, steps, tokenizer)))
        examples, _ = load_preference_data(rows)
        pairs, _ = tokenize_examples(examples, tokenizer, workload.max_length, workload.max_prompt_length)
        if len(pairs) != steps * workload.batch_size:
            raise SystemExit(f"preftune kept {len(pairs)} of {steps * workload.batch_size} pairs")
        tokens = sum(2 * len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)

        accelerator = make_accelerator(mixed_precision)  # as `preftune train` does
        set_seed(seed)
        model = load_model(model_path, dtype="float32", device=accelerator.device)
        model.config.use_cache = False
        if workload.lora:
            model = apply_lora(
                model, rank=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=LORA_TARGET_MODULES
            )
        else:
            model.requires_grad_(True)
        probe = AutocastProbe()
        probe.attach(model)
        layout = settings["layout"]
        batcher = Batcher(tokenizer.pad_token_id, layout, attention_length(model))
        objective = build(f"dpo(beta={BETA})")
        optim = OptimConfig(
            lr=LEARNING_RATE,
            batch_size=workload.batch_size,
            epochs=1.0,
            warmup_ratio=0.0,
            schedule="linear",
            max_grad_norm=1.0,
            seed=seed,
            mixed_precision=mixed_precision,
        )
        plan = make_plan(pairs, optim, accelerator.num_processes, settings["group_by_length"])
        total = plan.total_steps(optim.epochs, optim.max_steps)
        if total != steps:
            raise SystemExit(f"one epoch of {len(pairs)} pairs is {total} steps, not {steps}")
        group_size = responses_read(objective)

        reference_seconds = 0.0
        if settings["live_reference"]:
            reference = AdapterDisabledReference(model) if workload.lora else FrozenCopyReference(model)
        else:
            # The policy at step 0 is the reference: no frozen copy is made. The pairs the run's steps read,
            # sorted by length in blocks of the held-out batch size, as `preftune train` precomputes them.
            live = AdapterDisabledReference(model) if workload.lora else ModelReference(model)
            t0 = _synced(cuda)
            order = sorted(plan.indices_read(total), key=lambda i: pairs[i].length)
            size = EvalConfig().batch_size
            blocks = [order[k : k + size] for k in range(0, len(order), size)]
            batches = [batcher([pairs[i] for i in b], b, group_size=group_size).to(accelerator.device) for b in blocks]
            with torch.no_grad(), accelerator.autocast():
                reference = PrecomputedReference.build(live, batches, cache_dir=Path(tmp) / "reference")
            reference_seconds = _synced(cuda) - t0
            del live, batches

        trainer = Trainer(
            accelerator=accelerator,
            model=model,
            objective=objective,
            optim=optim,
            total_steps=total,
            reference=reference,
        )
        source = DatasetSource(
            pairs,
            batcher,
            plan,
            total,
            rank=accelerator.process_index,
            group_size=group_size,
            device=accelerator.device,
        )
        flops = useful_flops(model, pair_lengths(pairs), lora=workload.lora)
        ends: list[float] = []
        setup_done = _synced(cuda)
        rss_before_training = _peak_rss()
        result = trainer.fit(source, hooks=[Callbacks([lambda step, stats: ends.append(_synced(cuda))])])
    if result.steps != steps or len(ends) != steps:
        raise RuntimeError(f"expected {steps} steps, ran {result.steps} and timed {len(ends)}")
    forwards = probe.check(precision)
    train_seconds = ends[-1] - setup_done
    step_seconds = [b - a for a, b in zip([setup_done, *ends[:-1]], ends, strict=True)]
    seconds = reference_seconds + train_seconds
    return {
        "side": "preftune",
        "variant": variant,
        "precision": precision,
        "steps": steps,
        "pairs": len(pairs),
        "tokens": tokens,
        "seconds": seconds,
        "train_seconds": train_seconds,
        "reference_seconds": reference_seconds,
        "step_seconds": step_seconds,
        "setup_seconds": setup_done - imported - reference_seconds,
        "import_seconds": imported - began,
        "peak_rss_before_training_bytes": rss_before_training,
        "useful_flops": flops,
        "useful_gflop_per_s": flops / seconds / 1e9,
        "forwards_by_precision": forwards,
        "skipped_steps": result.skipped_steps,
        "layout": layout,
        "group_by_length": settings["group_by_length"],
        "optim": type(trainer.optimizer.optimizer).__name__ + (" (fused)" if _fused(trainer) else ""),
    }


def pair_lengths(pairs: Sequence[Any]) -> list[tuple[int, int, int]]:
    """``(prompt, chosen, rejected)`` token counts of preftune's tokenised pairs."""
    return [(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in pairs]


def useful_flops(model: torch.nn.Module, lengths: Iterable[tuple[int, int, int]], *, lora: bool) -> float:
    """FLOPs of the work itself: one reference forward and one training step per pair, counting each prompt
    once and no padding. ``lengths``: each pair's ``(prompt, chosen, rejected)`` tokens after truncation (both
    sides count the same work with this one function, each from its own tokenisation).

    A forward costs 2·P per token for the P weights of the decoder layers, 2·H·V per response token for the LM head
    (the only positions whose logits are needed) and 4·H per layer for each earlier position a token attends to
    (its prompt and the response before it). Training adds a backward pass: 2 forwards' worth for full
    fine-tuning (gradients of activations and of weights), 1 for LoRA (gradients of activations; the adapters'
    own are negligible).
    """
    config = model.config
    hidden, vocab, layers = config.hidden_size, config.vocab_size, config.num_hidden_layers
    body = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and "lora_" not in n)
    forward = 0.0
    for p, c, r in lengths:
        attended = p * (p + 1) / 2 + sum(n * p + n * (n + 1) / 2 for n in (c, r))
        forward += 2 * body * (p + c + r) + 2 * hidden * vocab * (c + r) + 4 * hidden * layers * attended
    return forward * (1 + (2 if lora else 3))


def _synced(cuda: bool) -> float:
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter()


def _peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _fused(trainer: Any) -> bool:
    groups = getattr(trainer.optimizer, "optimizer", trainer.optimizer).param_groups
    return bool(groups and groups[0].get("fused"))
