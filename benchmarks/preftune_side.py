"""The preftune side of ``compare_trl.py``: the same pairs, model, batch and steps, through preftune's trainer.

``run(workload, steps, seed, variant)`` builds what ``preftune train`` builds (tokenised pairs, the model, LoRA,
the reference, :class:`preftune.training.loop.Trainer`), trains ``steps`` optimiser steps over exactly the pairs
TRL gets (one epoch of ``steps * batch`` pairs; preftune visits them in its seeded order, TRL in file order), and
returns the fields of the TRL side plus ``reference_seconds``.

Reference work counts: by default the reference log-probs are precomputed once for these pairs (a cache in a fresh
temporary folder, so never a hit from an earlier run), and that time is added to ``seconds``, the figure pairs/s is
computed from. Checkpoints and held-out evaluation are off, as on the TRL side (``save_strategy="no"``).

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
from pathlib import Path
from typing import Any

import torch
from workloads import BETA, LEARNING_RATE, LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGET_MODULES, Workload

VARIANTS = {
    "default": {"layout": "shared"},
    "padded": {"layout": "padded"},
    "packed": {"layout": "packed"},
    "grouped": {"layout": "padded", "group_by_length": True},
    "live-ref": {"layout": "shared", "live_reference": True},
}


def run(workload: Workload, steps: int, seed: int, variant: str) -> dict[str, Any]:
    """Train ``steps`` steps of ``workload`` with preftune; timings and counts as in ``compare_trl.py``."""
    if variant not in VARIANTS:
        raise SystemExit(f"unknown preftune variant '{variant}' (known: {', '.join(VARIANTS)})")
    settings = {"group_by_length": False, "live_reference": False, **VARIANTS[variant]}
    began = time.perf_counter()
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
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
    from preftune.training.config import EvalConfig, OptimConfig
    from preftune.training.loop import Trainer

    imported = time.perf_counter()
    cuda = torch.cuda.is_available()
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

        AcceleratorState._reset_state()
        accelerator = Accelerator(mixed_precision="bf16" if cuda else "no")
        torch.manual_seed(seed)
        model = load_model(model_path, dtype="float32", device=accelerator.device)
        model.config.use_cache = False
        if workload.lora:
            model = apply_lora(
                model, rank=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=LORA_TARGET_MODULES
            )
        else:
            model.requires_grad_(True)
        layout = settings["layout"]
        batcher = Batcher(tokenizer.pad_token_id, layout, attention_length(model))

        reference_seconds = 0.0
        if settings["live_reference"]:
            reference = AdapterDisabledReference(model) if workload.lora else FrozenCopyReference(model)
        else:
            # The policy at step 0 is the reference: no frozen copy is made.
            live = AdapterDisabledReference(model) if workload.lora else ModelReference(model)
            t0 = time.perf_counter()
            order = sorted(range(len(pairs)), key=lambda i: pairs[i].length)
            size = EvalConfig().batch_size  # as `preftune train` precomputes
            blocks = [order[k : k + size] for k in range(0, len(order), size)]
            batches = [batcher([pairs[i] for i in b], b).to(accelerator.device) for b in blocks]
            with torch.no_grad(), accelerator.autocast():
                reference = PrecomputedReference.build(live, batches, cache_dir=Path(tmp) / "reference")
            reference_seconds = _synced(cuda) - t0
            del live

        class NoCheckpoints(Trainer):
            def _save(self, step: int, result: Any) -> None:  # TRL's side runs with save_strategy="no"
                pass

        ends: list[float] = []
        trainer = NoCheckpoints(
            accelerator=accelerator,
            model=model,
            objective=build(f"dpo(beta={BETA})"),
            train_pairs=pairs,
            eval_pairs=[],
            train_reference=reference,
            eval_reference=None,
            batcher=batcher,
            optim=OptimConfig(
                lr=LEARNING_RATE,
                batch_size=workload.batch_size,
                epochs=1.0,
                warmup_ratio=0.0,
                schedule="linear",
                max_grad_norm=1.0,
                seed=seed,
                mixed_precision="bf16" if cuda else "no",
            ),
            eval_config=EvalConfig(),
            output_dir=Path(tmp) / "run",
            save_every=10**9,
            group_by_length=settings["group_by_length"],
            callbacks=[lambda step, stats: ends.append(_synced(cuda))],
        )
        flops = useful_flops(model, pairs, lora=workload.lora)
        setup_done = _synced(cuda)
        rss_before_training = _peak_rss()
        trainer.train()
    train_seconds = ends[-1] - setup_done
    step_seconds = [b - a for a, b in zip([setup_done, *ends[:-1]], ends, strict=True)]
    return {
        "side": "preftune",
        "variant": variant,
        "steps": steps,
        "pairs": len(pairs),
        "tokens": tokens,
        "seconds": reference_seconds + train_seconds,
        "train_seconds": train_seconds,
        "reference_seconds": reference_seconds,
        "step_seconds": step_seconds,
        "setup_seconds": setup_done - imported - reference_seconds,
        "import_seconds": imported - began,
        "peak_rss_before_training_bytes": rss_before_training,
        "useful_flops": flops,
        "useful_gflop_per_s": flops / (reference_seconds + train_seconds) / 1e9,
        "layout": layout,
        "group_by_length": settings["group_by_length"],
        "optim": type(trainer.optimizer.optimizer).__name__ + (" (fused)" if _fused(trainer) else ""),
    }


def useful_flops(model: torch.nn.Module, pairs: list[Any], *, lora: bool) -> float:
    """FLOPs of the work itself: one reference forward and one training step per pair, counting each prompt
    once and no padding.

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
    for pair in pairs:
        p, c, r = len(pair.prompt_ids), len(pair.chosen_ids), len(pair.rejected_ids)
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
