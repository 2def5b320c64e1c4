"""The policy's current weights as the base model names them, LoRA merged in, for a second engine that
samples (a colocated vLLM, a bfloat16 copy): :func:`merged_weights`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from preftune.errors import PreftuneError

_PEFT_PREFIX = "base_model.model."


def _base_name(name: str) -> str:
    """A PEFT parameter's name in the base model: no ``base_model.model.`` prefix, no ``.base_layer``."""
    name = name.removeprefix(_PEFT_PREFIX)
    return name.replace(".base_layer.", ".")


def _lora_delta(layer: Any, adapter: str) -> Any:
    """``scaling · B · A`` of one adapter of a LoRA linear layer, in float32 (what its forward adds to W x)."""
    if adapter not in layer.lora_A:
        raise PreftuneError(
            f"cannot merge LoRA adapter {adapter!r} of a {type(layer).__name__}: only linear "
            "layers (lora_A/lora_B) are merged"
        )
    if getattr(layer, "use_dora", {}).get(adapter, False):
        raise PreftuneError(
            "DoRA adapters are not merged here: train plain LoRA, or sample with the policy "
            "itself (sampling.backend=hf, sampling.dtype=float32)"
        )
    a, b = layer.lora_A[adapter].weight.float(), layer.lora_B[adapter].weight.float()
    delta = (b @ a) * layer.scaling[adapter]
    return delta.T if getattr(layer, "fan_in_fan_out", False) else delta


def empty_copy(model: Any, dtype: Any, device: Any = None) -> Any:
    """An uninitialised ``dtype`` model of ``model``'s architecture (its base model's, under PEFT),
    built on the meta device from its config (no file read, no random initialisation, no weights
    through memory): its parameters left on the meta device (``device`` None: for
    ``load_state_dict(assign=True)``) or allocated, uninitialised, on ``device``. It holds copies of
    ``model``'s buffers (rotary frequencies: in no state dict) and its generation config."""
    import torch
    from transformers import AutoModelForCausalLM

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config
    attention = getattr(config, "_attn_implementation", None)
    with torch.device("meta"):
        copy = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)
    if device is not None:
        copy = copy.to_empty(device=device)
    modules = dict(base.named_modules())
    for name, module in copy.named_modules():
        for buffer in list(module._buffers):
            module._buffers[buffer] = modules[name]._buffers[buffer].detach().clone()
    if getattr(base, "generation_config", None) is not None:
        copy.generation_config = base.generation_config
    return copy


def current_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """``model.state_dict()``'s names and tensors (parameters, tied ones under each name, and persistent
    buffers), read from the modules as they hold them now. A model sharded with FSDP2 holds its whole
    parameters inside :func:`~preftune.training.sharding.whole_parameters`, where its ``state_dict``
    would still give the shards."""
    for prefix, module in model.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        for name, param in module._parameters.items():
            if param is not None:
                yield dot + name, param
        for name, buffer in module._buffers.items():
            if buffer is not None and name not in module._non_persistent_buffers_set:
                yield dot + name, buffer


def merged_weights(model: Any) -> Iterator[tuple[str, Any]]:
    """The model's current weights under the base model's parameter names, LoRA merged in: ``(name, tensor)``.

    For a PEFT LoRA model each LoRA layer's weight is ``W + scaling · B · A`` summed over the active
    adapters, computed into new tensors from ``base_layer.weight``, ``lora_A``/``lora_B`` and
    ``scaling``: the trained model is never touched (PEFT's merge/unmerge would add and subtract
    the delta in place, and the float rounding would move the weights the adapter-off reference
    reads). Names lose ``base_model.model.`` and ``.base_layer``; ``lora_*`` tensors are dropped.
    A plain model gives its ``state_dict``'s tensors (:func:`current_tensors`). A generator: one
    merged tensor lives at a time, so a consumer such as vLLM's ``load_weights`` streams them in.
    Runs on any device (the model's).
    """
    import torch

    if not hasattr(model, "peft_config"):
        with torch.no_grad():
            yield from ((name, tensor.detach()) for name, tensor in current_tensors(model))
        return
    from peft.tuners.lora import LoraLayer

    lora_layers = {f"{name}.base_layer.weight": m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    with torch.no_grad():
        for name, tensor in current_tensors(model):
            if ".lora_" in name:
                continue
            layer = lora_layers.get(name)
            if layer is not None and not layer.merged and not layer.disable_adapters:
                merged = tensor.float()
                for adapter in layer.active_adapters:
                    merged = merged + _lora_delta(layer, adapter)
                tensor = merged.to(tensor.dtype)
            yield _base_name(name), tensor.detach()
