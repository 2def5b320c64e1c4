"""LoRA adapters through ``peft``: attach, and save as an adapter or as merged weights.

The output layer (``lm_head``, tied to the input embedding in SmolLM2) never gets an adapter:
peft's ``"all-linear"`` already leaves it out, and an explicit list that names it is refused.
Both saved forms load back with ``from_pretrained``: an adapter folder with
``PeftModel.from_pretrained(base, folder)`` (or ``AutoModelForCausalLM.from_pretrained(folder)``,
which finds the base through ``adapter_config.json``), a merged folder as an ordinary checkpoint.
An adapter trained on other weights than the checkpoint the model was loaded from (a later stage
on an earlier stage's merged result) is saved with ``save_lora(..., base_model=folder)``, so its
``adapter_config.json`` names the weights it belongs to.

Gradient checkpointing (:mod:`preftune.modeling.checkpointing`) may be enabled before or after
:func:`apply_lora`.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from preftune.errors import PreftuneError
from preftune.modeling.adapter_precision import keep_adapters_in_float32
from preftune.modeling.checkpointing import drop_input_grad_hooks
from preftune.modeling.lora_targets import resolve_target_modules


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
        target_modules: ``"all-linear"`` (every linear layer of the decoder), a module name
            (``"q_proj"``), names in one string (``"q_proj,v_proj"``) or in a list/tuple, or a
            regex matched in full against module names; see :mod:`preftune.modeling.lora_targets`.
            Each must match a module of the model; the output layer is never a target.
        last_layers: adapt only the last N decoder layers. The backward pass then stops at the
            lowest adapted layer: on a 30-layer model, N = 10 makes a training step about 1.7×
            cheaper than adapting every layer.
    Returns:
        a ``peft.PeftModel``.
    Raises:
        PreftuneError: a bad setting, or anything peft refuses, as one line.
    """
    from peft import LoraConfig, get_peft_model

    if rank < 1:
        raise PreftuneError(f"LoRA rank must be at least 1, not {rank}")
    output_names = _output_layer_names(model)
    layers = _adapted_layers(model, last_layers)
    targets = resolve_target_modules(model, target_modules, output_names, layers)
    try:
        config = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=targets,
            exclude_modules=sorted(output_names),
            task_type="CAUSAL_LM",
            layers_to_transform=layers,
        )
        with warnings.catch_warnings():
            # peft asks the deprecated `is_gradient_checkpointing`; the FutureWarning is theirs, not the user's.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            wrapped = get_peft_model(model, config)
    except ValueError as error:  # what peft refuses that the checks above do not foresee
        raise PreftuneError(f"LoRA could not be applied: {_first_line(error)}") from error
    drop_input_grad_hooks(wrapped)  # peft adds them if checkpointing is already on; non-reentrant needs none
    keep_adapters_in_float32(wrapped)  # under bf16 autocast a young adapter's update would round away
    return wrapped


def check_lora_targets(
    model: nn.Module, target_modules: str | Sequence[str] = "all-linear", last_layers: int | None = None
) -> None:
    """Raise the one line :func:`apply_lora` would raise for these targets, without touching ``model``
    (so a run can refuse them before it writes anything)."""
    resolve_target_modules(model, target_modules, _output_layer_names(model), _adapted_layers(model, last_layers))


def _adapted_layers(model: nn.Module, last_layers: int | None) -> list[int] | None:
    """The decoder layers ``lora.last_layers`` adapts (None: all)."""
    if last_layers is None:
        return None
    total = int(model.config.num_hidden_layers)
    if not 1 <= last_layers <= total:
        raise PreftuneError(f"lora.last_layers must be between 1 and {total}, not {last_layers}")
    return list(range(total - last_layers, total))


def save_lora(
    model,
    path: str | os.PathLike[str],
    *,
    merged: bool = False,
    tokenizer=None,
    base_model: str | os.PathLike[str] | None = None,
) -> Path:
    """Save a LoRA-wrapped model: its adapter only (default) or a full checkpoint with the adapter merged.

    Merging works on a copy (``merge_and_unload`` on a deep copy), so ``model`` keeps training
    with its adapter; this needs the model's memory twice, once. The tokenizer, when given, is
    saved alongside so the folder is self-contained. Returns the folder.

    Args:
        base_model: for an adapter, the model it applies to, written as ``base_model_name_or_path``
            in ``adapter_config.json`` instead of the name the wrapped model was loaded from. Needed
            when the adapter was trained on weights that differ from that checkpoint (a later stage
            on the merged result of an earlier one). An existing folder is written as an absolute
            path, so the adapter loads from any working directory; anything else (a hub name) as is.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        raise PreftuneError("save_lora needs a model wrapped by apply_lora (a peft PeftModel)")
    if merged and base_model is not None:
        raise PreftuneError("save_lora: base_model names an adapter's base; a merged save has none")
    path = Path(path)
    if merged:
        plain = copy.deepcopy(model).merge_and_unload()
        plain.save_pretrained(path)
    elif base_model is None:
        model.save_pretrained(path)
    else:
        with _base_model_named(model, _base_model_reference(base_model)):
            model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


@contextmanager
def _base_model_named(model, name: str) -> Iterator[None]:
    """Let peft write ``name`` as every adapter's ``base_model_name_or_path`` while saving, then restore."""
    configs = list(model.peft_config.values())
    before = [config.base_model_name_or_path for config in configs]
    for config in configs:
        config.base_model_name_or_path = name
    try:
        yield
    finally:
        for config, value in zip(configs, before, strict=True):
            config.base_model_name_or_path = value


def _base_model_reference(base_model: str | os.PathLike[str]) -> str:
    folder = Path(base_model).expanduser()
    return str(folder.resolve()) if folder.is_dir() else os.fspath(base_model)


def _output_layer_names(model: nn.Module) -> set[str]:
    """The leaf names under which the model's output layer sits (``{"lm_head"}`` for most LMs)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.rsplit(".", 1)[-1] for name, module in model.named_modules() if head is not None and module is head}
    return names or {"lm_head"}


def _first_line(error: Exception) -> str:
    """The first line of a library's message, without a module repr it may open (``LlamaAttention(``)."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return line.rstrip("( ")
