"""Gradient (activation) checkpointing: each decoder layer's activations are recomputed in the
backward pass instead of kept, for plain transformers models and peft LoRA models alike.

Non-reentrant checkpointing (``torch.utils.checkpoint`` with ``use_reentrant=False``) is used.
It needs no input that requires grad, so the input-embedding hook transformers and peft add for
the reentrant kind (``enable_input_require_grads``) is removed: that hook makes autograd run the
backward pass down to the embeddings, through frozen layers, undoing what ``lora.last_layers``
saves. Layers below the lowest adapted one then run once, without recomputation. Layers take the
4-D masks of packed batches as keyword arguments, which non-reentrant checkpointing passes on.

Checkpointing acts only while the model is in training mode (``model.train()``) and autograd is
recording; reference passes under ``torch.no_grad()`` run as usual.
"""

from __future__ import annotations

import functools

from torch import nn

from preftune.errors import PreftuneError


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Turn on non-reentrant gradient checkpointing in every decoder layer of ``model`` (in place).

    Args:
        model: a transformers causal LM, or a peft model wrapping one; before or after
            :func:`~preftune.modeling.apply_lora`, either order works.
    Returns:
        ``model``, with ``config.use_cache`` off (a KV cache is useless in training and transformers
        refuses it under checkpointing).
    Raises:
        PreftuneError: the architecture has no gradient checkpointing.
    """
    lm = _base_model(model)
    if not getattr(lm, "supports_gradient_checkpointing", False):
        raise PreftuneError(f"{type(lm).__name__} does not support gradient checkpointing: set it off")
    settings = {"use_reentrant": False}
    try:
        if hasattr(lm, "activation_checkpointing_enable"):  # transformers 5 (the old name warns)
            lm.activation_checkpointing_enable(activation_checkpointing_kwargs=settings)
        else:
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=settings)
    except ValueError as error:
        raise PreftuneError(f"gradient checkpointing could not be enabled: {str(error).splitlines()[0]}") from error
    if getattr(lm, "config", None) is not None:
        lm.config.use_cache = False
    drop_input_grad_hooks(lm)
    return model


def gradient_checkpointing_enabled(model: nn.Module) -> bool:
    """True when some layer of ``model`` (or of the model a peft model wraps) is set to checkpoint."""
    return any(getattr(module, "gradient_checkpointing", False) is True for module in _base_model(model).modules())


def drop_input_grad_hooks(model: nn.Module) -> None:
    """Remove the input-embedding ``requires_grad`` hooks when every checkpointed layer is non-reentrant.

    transformers adds them when checkpointing is enabled and peft when it wraps a model that has
    it on; only reentrant checkpointing needs them (see the module docstring).
    """
    lm = _base_model(model)
    functions = [
        getattr(module, "_gradient_checkpointing_func", None)
        for module in lm.modules()
        if getattr(module, "gradient_checkpointing", False) is True
    ]
    non_reentrant = bool(functions) and all(
        isinstance(f, functools.partial) and f.keywords.get("use_reentrant") is False for f in functions
    )
    if non_reentrant and hasattr(lm, "disable_input_require_grads"):
        lm.disable_input_require_grads()


def _base_model(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (or ``model`` itself)."""
    get_base_model = getattr(model, "get_base_model", None)
    return get_base_model() if callable(get_base_model) and hasattr(model, "peft_config") else model
