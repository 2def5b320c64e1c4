"""Workloads shared by both sides of ``compare_trl.py``: model, batch, lengths, steps, precision, and the pairs.

Both preftune and TRL import their settings and data from here, so the two sides cannot drift apart. The data are the
HH-RLHF harmless pairs bundled with preftune (``bundled_path("hh-harmless")``), parsed by preftune's own loader into
conversations: a prompt (a list of messages ending with a user turn) and one assistant reply on each side. They are
handed out in TRL's conversational format::

    {"prompt": [{"role": "user", "content": ...}, ...],
     "chosen": [{"role": "assistant", "content": ...}],
     "rejected": [{"role": "assistant", "content": ...}]}

Which pairs: the first ``steps * batch_size`` pairs, in file order, whose chat-templated prompt (with the generation
prompt) has at most ``max_length // 2`` tokens. The two libraries truncate differently (TRL 1.16 cuts prompt+response
to ``max_length`` keeping the start, and drops a pair whose prompt alone fills ``max_length``; preftune cuts the prompt
from the left to ``max_prompt_length``, then the responses, and drops a pair with too little room left). With the prompt
at most half of ``max_length`` neither side drops a pair or cuts a prompt, and both cut an over-long response to the
same room, so both train on the same pairs with the same tokens (up to the newline TRL keeps after ChatML's
``<|im_end|>``).

Precision (:data:`PRECISIONS`): ``fp32`` trains in float32 throughout; ``bf16`` is autocast mixed precision over
float32 weights (the master weights and the optimiser state stay float32; matrix products run in bfloat16). Both sides
load the weights in float32 and differ only in how they switch autocast on (preftune: ``Accelerator(mixed_precision=
"bf16")``, TRL: ``bf16=True``); :class:`AutocastProbe` checks what each model forward actually ran under.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.data import bundled_path, load_preference_data
from preftune.modeling.embedded import ensure_embedded_model
from preftune.modeling.tiny import tiny_model_path

# The DPO and optimiser settings both sides use.
BETA = 0.1
LEARNING_RATE = 5e-6

# LoRA settings of the ``lora`` workloads (TRL: ``peft.LoraConfig`` with the same values).
LORA_R = 16
LORA_ALPHA = 32
LORA_DROPOUT = 0.0
LORA_TARGET_MODULES = "all-linear"

DATA = "hh-harmless"

# Precisions both sides can run in: float32, or bf16 autocast over float32 weights.
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class Workload:
    """One benchmark setting.

    Attributes:
        name: the name used on the command line and in the results.
        model_path: returns the model's local folder (building or converting it on first use).
        lora: train a LoRA adapter (``LORA_*``) instead of every weight.
        batch_size: pairs per optimiser step (no gradient accumulation).
        max_length: the most tokens of prompt + response per sequence.
        steps: default number of optimiser steps.
    """

    name: str
    model_path: Callable[[], Path]
    lora: bool
    batch_size: int
    max_length: int
    steps: int

    @property
    def max_prompt_length(self) -> int:
        """The longest prompt a selected pair may have (half of ``max_length``)."""
        return self.max_length // 2


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("tiny", tiny_model_path, lora=False, batch_size=8, max_length=512, steps=12),
        Workload("smollm2-lora", ensure_embedded_model, lora=True, batch_size=4, max_length=256, steps=6),
        Workload("smollm2-full", ensure_embedded_model, lora=False, batch_size=4, max_length=256, steps=6),
    )
}


def default_precision(cuda: bool) -> str:
    """The precision used when none is asked for: ``bf16`` on CUDA, ``fp32`` on the CPU."""
    return "bf16" if cuda else "fp32"


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS` (a ``SystemExit`` naming them otherwise)."""
    if precision not in PRECISIONS:
        raise SystemExit(f"unknown precision '{precision}' (known: {', '.join(PRECISIONS)})")
    return precision


class AutocastProbe:
    """Records the precision every forward of the models it is attached to runs under.

    A forward pre-hook on each model's input embeddings (so once per model forward, LoRA-wrapped or not) notes
    ``bf16``/``fp16`` where autocast to that type is on for the embeddings' device, else ``fp32``. :meth:`check`
    fails when a forward ran in another precision than the one asked for: the two sides are then compared in the
    same precision by construction, not by assumption. The hook is a closure, so a deep copy of a model (a frozen
    reference copy) reports here too.
    """

    def __init__(self) -> None:
        self.seen: dict[str, int] = {}

    def attach(self, model: Any) -> None:
        import torch

        def note(module: Any, args: Any) -> None:
            device = module.weight.device.type
            if torch.is_autocast_enabled(device):
                dtype = torch.get_autocast_dtype(device)
                state = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype))
            else:
                state = "fp32"
            self.seen[state] = self.seen.get(state, 0) + 1

        model.get_input_embeddings().register_forward_pre_hook(note)

    def check(self, precision: str) -> dict[str, int]:
        """The forwards seen per precision; raises ``RuntimeError`` unless all ran in ``precision``."""
        if set(self.seen) != {precision}:
            raise RuntimeError(f"asked for {precision}, but the model forwards ran in {self.seen}")
        return dict(self.seen)


def get_workload(name: str) -> Workload:
    """The workload called ``name`` (a ``KeyError`` naming the known ones otherwise)."""
    try:
        return WORKLOADS[name]
    except KeyError:
        raise KeyError(f"unknown workload '{name}' (known: {', '.join(WORKLOADS)})") from None


def _ids(encoded: Any) -> list[int]:
    """``apply_chat_template(..., tokenize=True)`` returns a list or, in transformers 5, a BatchEncoding."""
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)


def prompt_tokens(tokenizer: Any, prompt: list[dict[str, str]]) -> int:
    """Tokens of the chat-templated prompt with the generation prompt, as both sides render it."""
    return len(_ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)))


def benchmark_pairs(workload: Workload, steps: int, tokenizer: Any | None = None) -> list[dict[str, Any]]:
    """The first ``steps * batch_size`` usable pairs in TRL's conversational format (see the module docstring).

    Args:
        workload: gives the batch size and ``max_prompt_length``.
        steps: optimiser steps; this many batches of pairs are returned.
        tokenizer: the model's tokenizer; loaded from ``workload.model_path()`` when not given.

    Raises:
        ValueError: when the bundled data hold fewer usable pairs than asked for.
    """
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(workload.model_path())
    wanted = steps * workload.batch_size
    examples, _ = load_preference_data(bundled_path(DATA))
    pairs: list[dict[str, Any]] = []
    for example in examples:
        if not (example.is_conversational and example.is_paired):
            continue
        if prompt_tokens(tokenizer, example.prompt) > workload.max_prompt_length:
            continue
        pairs.append(
            {
                "prompt": [dict(m) for m in example.prompt],
                "chosen": [dict(m) for m in example.chosen],
                "rejected": [dict(m) for m in example.rejected],
            }
        )
        if len(pairs) == wanted:
            return pairs
    raise ValueError(f"{DATA}: only {len(pairs)} pairs have a prompt of at most {workload.max_prompt_length} tokens")
