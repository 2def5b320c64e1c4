"""User-defined objective terms that go non-finite, registered as any user's term would be.

``nan_at(first=, last=)`` multiplies the batch's chosen log-likelihood by NaN on optimiser steps
``first..last``: the loss and every gradient become NaN, as in a real blow-up. It reads the step
from :data:`STATE`, which :func:`track_step` (a trainer callback) keeps current.

``nan_for_length(tokens=)`` adds NaN, as a constant, to the loss of every pair whose chosen
response has exactly ``tokens`` tokens: the loss is NaN but the gradient stays finite (the
constant has none). With two processes, only the one holding such a pair sees the NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from preftune.objectives import PairRecord, Term, register

STATE = {"step": 1}  # the optimiser step being computed (1-based)


def track_step(done: int, stats: dict[str, float]) -> None:
    STATE["step"] = done + 1


@register
@dataclass(frozen=True)
class NanAt(Term):
    name: ClassVar[str] = "nan_at"
    first: int = 0
    last: int = 0

    def loss(self, record: PairRecord) -> Tensor:
        scale = float("nan") if self.first <= STATE["step"] <= self.last else 0.0
        return record.chosen.mean * scale


@register
@dataclass(frozen=True)
class NanForLength(Term):
    name: ClassVar[str] = "nan_for_length"
    tokens: int = 0

    def loss(self, record: PairRecord) -> Tensor:
        count = record.chosen.count.detach()
        return torch.where(count == self.tokens, torch.full_like(count, float("nan")), torch.zeros_like(count))
