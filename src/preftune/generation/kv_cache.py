"""A KV cache that grows in place, so that a decoding step does not copy the whole cache.

transformers' ``DynamicCache`` appends each step's keys and values with ``torch.cat``: every step
copies every layer's cache so far. On SmolLM2-135M (30 layers; 16 rows of ~250 positions in
bfloat16) that is ~90 MB a step, and ``aten::cat`` took 18% of a CPU decoding step's time in torch's
profiler (issue 22). A ``StaticCache`` writes in place, but attends over its whole length, padding
masked: 1.2× slower than the dynamic cache on a CPU (``benchmarks/samplers.py``).

:class:`PreallocatedLayer` keeps both halves: a buffer sized once for the prompt and the new
tokens, written in place, and attention handed a view of the filled positions only, so each step
computes exactly what it computes with a ``DynamicCache``.

    >>> cache = preallocated_cache(model, capacity=prompt_width + max_new_tokens)
    >>> model.generate(input_ids, attention_mask=mask, past_key_values=cache, ...)
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values ``[B, H, T, D]`` are views of ``[B, H, capacity, D]`` buffers.

    Writing past the capacity, or into a cache whose tensors were replaced (``batch_repeat_interleave``
    after a shared prompt pass, ``batch_select_indices``), moves the filled part into new buffers once.
    """

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``[B, H, t, D]`` new keys and values after the filled positions; all of them, as views."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled = self.get_seq_length()
        end = filled + key_states.shape[-2]
        if not self._holds(end, key_states):
            self._reallocate(filled, end, key_states, value_states)
        keys, values = self.buffers  # type: ignore[misc]
        keys[:, :, filled:end] = key_states
        values[:, :, filled:end] = value_states
        self.keys, self.values = keys[:, :, :end], values[:, :, :end]
        return self.keys, self.values

    def _holds(self, end: int, key_states: torch.Tensor) -> bool:
        """Whether the buffers exist, still back the cache's tensors, and have room up to ``end``."""
        if self.buffers is None or self.keys is None or self.keys.numel() == 0:
            return False
        keys = self.buffers[0]
        return (
            self.keys.data_ptr() == keys.data_ptr()
            and self.keys.shape[0] == keys.shape[0] == key_states.shape[0]
            and end <= keys.shape[2]
        )

    def _reallocate(self, filled: int, end: int, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        """New buffers of ``max(end, capacity)`` positions, holding the ``filled`` positions so far."""
        size = max(end, self.capacity)
        batch, heads, _, dim = key_states.shape
        keys = key_states.new_empty(batch, heads, size, dim)
        values = value_states.new_empty(batch, heads, size, value_states.shape[-1])
        if filled:
            keys[:, :, :filled] = self.keys
            values[:, :, :filled] = self.values
        self.buffers = (keys, values)


def preallocated_cache(model: Any, capacity: int) -> DynamicCache | None:
    """A ``DynamicCache`` for ``model`` whose layers are :class:`PreallocatedLayer`\\ s of ``capacity``
    positions, or None when the model's cache has other layer kinds (sliding windows, linear
    attention): those keep transformers' own."""
    config = getattr(model, "config", None)
    if config is None:
        return None
    cache = DynamicCache(config=config)
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [PreallocatedLayer(capacity) for _ in cache.layers]
    return cache
