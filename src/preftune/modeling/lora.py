"""LoRA adapters through ``peft``: attach, and save as an adapter or as merged weights.

The output layer (``lm_head``, tied to the input embedding in SmolLM2) never gets an adapter:
peft's ``"all-linear"`` already leaves it out, and an explicit list that names it is refused.
Both saved forms load back with ``from_pretrained``: an adapter folder with
``PeftModel.from_pretrained(base, folder)`` (or ``AutoModelForCausalLM.from_pretrained(folder)``,
which finds the base through ``adapter_config.json``), a merged folder as an ordinary checkpoint.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from preftune.errors import PreftuneError


def apply_lora(
    model: nn.Module,
    rank: int = 16,
    alpha: float = 32,
    dropout: float = 0.0,
    target_modules: str | Sequence[str] = "all-linear",
    last_layers: int | None = None,
):
    """Wrap ``model`` (a transformers causal LM) in a ``peft`` LoRA model; only the adapters train.

    Args:
        model: the causal LM; modified in place (LoRA layers are injected into it).
        rank: LoRA rank r.
        alpha: LoRA scaling numerator (the update is scaled by ``alpha / rank``).
        dropout: dropout on the adapter input.
        target_modules: ``"all-linear"`` (every linear layer of the decoder) or module names
            such as ``["q_proj", "v_proj"]``; the output layer is never a target.
        last_layers: adapt only the last N decoder layers. The backward pass then stops at the
            lowest adapted layer: on a 30-layer model, N = 10 makes a training step about 1.7×
            cheaper than adapting every layer.
    Returns:
        a ``peft.PeftModel``.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise PreftuneError(f"LoRA rank must be at least 1, not {rank}")
    output_names = _output_layer_names(model)
    if not isinstance(target_modules, str):
        target_modules = list(target_modules)
        named = sorted(set(target_modules) & output_names)
        if named:
            raise PreftuneError(f"LoRA target_modules names the output layer {named}: it never gets an adapter")
    layers = None
    if last_layers is not None:
        total = int(model.config.num_hidden_layers)
        if not 1 <= last_layers <= total:
            raise PreftuneError(f"LoRA last_layers must be between 1 and {total}, not {last_layers}")
        layers = list(range(total - last_layers, total))
        if isinstance(target_modules, str) and target_modules == "all-linear":
            # peft takes layers_to_transform only with named targets: name every linear layer.
            target_modules = sorted(
                {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
                - output_names
            )
        if target_modules == "all-linear":  # peft takes layers_to_transform only with a list of names
            target_modules = _linear_layer_names(model, output_names)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        exclude_modules=sorted(output_names) or None,
        task_type="CAUSAL_LM",
        layers_to_transform=layers,
    )
    return get_peft_model(model, config)


def save_lora(model, path: str | os.PathLike[str], *, merged: bool = False, tokenizer=None) -> Path:
    """Save a LoRA-wrapped model: its adapter only (default) or a full checkpoint with the adapter merged.

    Merging works on a copy (``merge_and_unload`` on a deep copy), so ``model`` keeps training
    with its adapter; this needs the model's memory twice, once. The tokenizer, when given, is
    saved alongside so the folder is self-contained. Returns the folder.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise PreftuneError("save_lora needs a model wrapped by apply_lora (a peft PeftModel)")
    path = Path(path)
    if merged:
        plain = copy.deepcopy(model).merge_and_unload()
        plain.save_pretrained(path)
    else:
        model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def _linear_layer_names(model: nn.Module, exclude: set[str]) -> list[str]:
    """The leaf names of the model's linear layers (``q_proj``, ``up_proj``, ...), the output layer excepted:
    what peft's ``"all-linear"`` targets, spelled out."""
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    return sorted(names - exclude)


def _output_layer_names(model: nn.Module) -> set[str]:
    """The leaf names under which the model's output layer sits (``{"lm_head"}`` for most LMs)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if head is not None and module is head}
    return names or {"lm_head"}
