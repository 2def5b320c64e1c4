"""A pairwise objective read on sampled groups: every pair of a group's responses, each response
forwarded once (issue 22; P3's on-policy DPO with ``pairing=all``, docs/methods.md §4).

A round that pairs every two of a prompt's C samples whose rewards differ by more than a gap has
up to C(C−1)/2 pairs per prompt. Built as pairs, each response would be forwarded once per pair it
sits in (C − 1 times). :class:`WithinGroups` reads the group's ``[P, C]`` record instead, one
forward per response, and hands its objective a :class:`~preftune.objectives.PairRecord` of every
such pair gathered from it (:func:`pairs_within`): the same losses, gradients summed back into
the shared log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from preftune.errors import SpecError
from preftune.objectives.base import Objective, ObjectiveOutput
from preftune.objectives.records import GroupRecord, PairRecord, SequenceLogProbs


def pairs_within(record: GroupRecord, gap: float = 0.0) -> PairRecord:
    """Every (chosen i, rejected j) of each group with r_i − r_j > ``gap``, as a ``[pairs]`` record:
    by group, then by chosen and rejected index (i, j ascending), as ``torch.nonzero`` orders them.

    Args:
        record: ``[P, C]`` policy (and reference) log-probs with ``[P, C]`` rewards.
        gap: the reward difference a pair must exceed (≥ 0).
    """
    r = record.rewards
    group, chosen, rejected = torch.nonzero(r.unsqueeze(2) - r.unsqueeze(1) > gap, as_tuple=True)
    pick = lambda s, k: None if s is None else _gather(s, group, k)  # noqa: E731
    return PairRecord(
        _gather(record.samples, group, chosen),
        _gather(record.samples, group, rejected),
        pick(record.ref, chosen),
        pick(record.ref, rejected),
    )


def _gather(s: SequenceLogProbs, group: torch.Tensor, k: torch.Tensor) -> SequenceLogProbs:
    """Response ``k[n]`` of group ``group[n]`` for each n: a ``[N]`` record (gradients flow back)."""
    pick = lambda x: None if x is None else x[group, k]  # noqa: E731
    return SequenceLogProbs(s.sum[group, k], s.count[group, k], pick(s.tokens), pick(s.mask), pick(s.collision))


@dataclass(frozen=True)
class WithinGroups:
    """``objective`` (pairwise) over every pair within each group whose rewards differ by more than ``gap``.

    It reads :class:`GroupRecord`\\ s, so a trainer forwards each sampled response once; the loss is
    per pair (``[pairs]``), its mean what a step minimises, as over the same pairs built as items.
    Every group it is given must hold at least one such pair (the on-policy source keeps only those).
    """

    objective: Objective
    gap: float = 0.0
    record_type: ClassVar[type] = GroupRecord

    def __post_init__(self) -> None:
        if self.objective.record_type is not PairRecord:
            raise SpecError(f"WithinGroups pairs a group's samples for a pairwise objective, not '{self.objective}'")
        if not self.gap >= 0:
            raise SpecError(f"the reward gap must be a number ≥ 0, not {self.gap}")

    def __call__(self, record: GroupRecord) -> ObjectiveOutput:
        if not isinstance(record, GroupRecord):
            raise SpecError(f"WithinGroups reads sampled groups, got {type(record).__name__}")
        pairs = pairs_within(record, self.gap)
        if pairs.batch_size == 0:
            raise SpecError("no pair of responses in this batch differs by more than the reward gap")
        return self.objective(pairs)

    @property
    def terms(self):
        return self.objective.terms

    needs_reference = property(lambda self: self.objective.needs_reference)
    needs_rejected = property(lambda self: True)
    needs_token_logps = property(lambda self: self.objective.needs_token_logps)
    needs_reference_tokens = property(lambda self: self.objective.needs_reference_tokens)
    needs_collision = property(lambda self: self.objective.needs_collision)
    needs_mismatched = property(lambda self: self.objective.needs_mismatched)
    sorts_batch = property(lambda self: self.objective.sorts_batch)
    fits_unpaired = property(lambda self: False)  # it reads sampled groups, never unpaired sets

    def labels(self) -> list[str]:
        return self.objective.labels()

    def margin_settings(self) -> tuple[float, bool]:
        return self.objective.margin_settings()

    def describe(self) -> str:
        return self.objective.describe()

    def __str__(self) -> str:
        return str(self.objective)
