"""How a run lays out its batches: :func:`build_batch` in one of the :data:`LAYOUTS` and the
:class:`Batcher` that holds a run's choice — padded rows (:mod:`preftune.data.collate`) or packed
rows (:mod:`preftune.data.packing`). Apart from both, so neither imports the other's caller."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from preftune.data.batch import Batch
from preftune.data.collate import collate
from preftune.data.groups import TokenizedGroup
from preftune.data.mismatched import mismatched_groups
from preftune.data.packing import pack
from preftune.errors import PreftuneError

LAYOUTS = ("shared", "packed", "padded")


def build_batch(
    pairs: Sequence[TokenizedGroup],
    indices: Sequence[int] | torch.Tensor,
    pad_id: int,
    layout: str = "shared",
    *,
    group_size: int | None = None,
    attention_length: int | None = None,
    mismatched: bool = False,
    max_length: int | None = None,
) -> Batch:
    """A batch in one of the :data:`LAYOUTS`: ``shared`` (packed, one prompt per example),
    ``packed`` (packed, one prompt per response) or ``padded`` (one right-padded row per response).
    ``group_size``: the first C responses of each example (default all); ``attention_length``
    sizes packed rows (see :func:`preftune.data.packing.pack`); ``mismatched``: the batch also
    carries its mismatched pairs (``batch.mismatched``, :mod:`preftune.data.mismatched`), each row
    at most ``max_length`` tokens."""
    batch = _laid_out(pairs, indices, pad_id, layout, group_size, attention_length)
    if mismatched:
        others = mismatched_groups(pairs, group_size, max_length)
        batch.mismatched = _laid_out(others, indices, pad_id, layout, None, attention_length)
    return batch


def _laid_out(
    pairs: Sequence[TokenizedGroup],
    indices: Sequence[int] | torch.Tensor,
    pad_id: int,
    layout: str,
    group_size: int | None,
    attention_length: int | None,
) -> Batch:
    if layout == "padded":
        return collate(pairs, indices, pad_id, group_size=group_size)
    if layout in ("shared", "packed"):
        return pack(
            pairs,
            indices,
            pad_id,
            group_size=group_size,
            share_prompt=layout == "shared",
            attention_length=attention_length,
        )
    raise PreftuneError(f"unknown batch layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


@dataclass(frozen=True)
class Batcher:
    """How a run lays out its batches: ``batcher(items, indices)`` is :func:`build_batch` with these settings;
    ``max_length``: the longest a mismatched row may be (the run's ``data.max_length``)."""

    pad_id: int
    layout: str = "shared"
    attention_length: int | None = None
    max_length: int | None = None

    def __call__(
        self,
        pairs: Sequence[TokenizedGroup],
        indices: Sequence[int] | torch.Tensor,
        *,
        group_size: int | None = None,
        mismatched: bool = False,
    ) -> Batch:
        return build_batch(
            pairs,
            indices,
            self.pad_id,
            self.layout,
            group_size=group_size,
            attention_length=self.attention_length,
            mismatched=mismatched,
            max_length=self.max_length,
        )
