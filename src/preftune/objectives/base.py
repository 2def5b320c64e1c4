"""Terms, their weighted sums, and what a call returns.

A :class:`Term` is one named loss (``dpo``, ``exmate``...) with its hyper-parameters; an
:class:`Objective` is a weighted sum of terms over the same kind of record. Calling an
objective returns the per-example loss, each term's per-example loss and the metrics of
METHODS.md §6, all ``[B]`` tensors so that a trainer can reduce them across processes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from preftune.errors import SpecError
from preftune.objectives.records import GroupRecord, PairRecord, Record


@dataclass(frozen=True)
class Term:
    """One loss term. Subclasses are frozen dataclasses whose fields are hyper-parameters.

    Class attributes say what the term reads, so a trainer can check a setup before it runs:
    ``record_type`` (pairs or groups), ``needs_rejected``, ``needs_reference``,
    ``needs_token_logps``.
    """

    name: ClassVar[str]
    record_type: ClassVar[type] = PairRecord
    needs_rejected: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_token_logps: ClassVar[bool] = False
    builds_margin: ClassVar[bool] = False  # a term on h with `beta` and `average` (dpo, ipo, hinge)

    def loss(self, record: Record) -> Tensor:
        """Per-example loss ``[B]`` (pairs) or ``[P]`` (groups)."""
        raise NotImplementedError

    def _check_positive(self, **values: float) -> None:
        for key, value in values.items():
            if not value > 0:
                raise SpecError(f"{self.name}: {key} must be > 0, got {value}")

    def _check_non_negative(self, **values: float) -> None:
        for key, value in values.items():
            if not value >= 0:
                raise SpecError(f"{self.name}: {key} must be >= 0, got {value}")

    def describe(self) -> str:
        """``name(key=value, ...)`` with every hyper-parameter, parseable by :func:`parse`."""
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{self.name}({args})"

    # Python composition: dpo() + 0.5 * exmate()
    def __add__(self, other: Term | Objective) -> Objective:
        return Objective.of(self) + other

    def __mul__(self, weight: float) -> Objective:
        return Objective(((float(weight), self),))

    __rmul__ = __mul__


@dataclass(frozen=True)
class ObjectiveOutput:
    """What an objective returns for one batch.

    Attributes:
        loss: ``[B]`` weighted per-example loss; ``loss.mean()`` is what a trainer minimises.
        terms: term label -> ``[B]`` unweighted per-example loss of that term.
        metrics: metric name -> ``[B]`` per-example value, detached (METHODS.md §6).
    """

    loss: Tensor
    terms: dict[str, Tensor]
    metrics: dict[str, Tensor]


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms, e.g. ``dpo + 0.5*exmate``.

    Every term must read the same kind of record (pairs or groups); the constructor refuses a
    mix, so a bad combination fails when the config is read, not mid-run.
    """

    weighted_terms: tuple[tuple[float, Term], ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.weighted_terms:
            raise SpecError("an objective needs at least one term")
        kinds = {term.record_type for _, term in self.weighted_terms}
        if len(kinds) > 1:
            pair = [t.name for _, t in self.weighted_terms if t.record_type is PairRecord]
            group = [t.name for _, t in self.weighted_terms if t.record_type is GroupRecord]
            raise SpecError(
                f"cannot combine pairwise terms {pair} with sampled-group terms {group}: "
                "they read different data (pairs vs C samples per prompt with rewards)"
            )
        for weight, term in self.weighted_terms:
            if weight != weight or weight in (float("inf"), float("-inf")):
                raise SpecError(f"weight of '{term.name}' must be finite, got {weight}")

    @classmethod
    def of(cls, term: Term | Objective) -> Objective:
        return term if isinstance(term, Objective) else cls(((1.0, term),))

    def __add__(self, other: Term | Objective) -> Objective:
        return Objective(self.weighted_terms + Objective.of(other).weighted_terms)

    __radd__ = __add__

    def __mul__(self, weight: float) -> Objective:
        return Objective(tuple((w * float(weight), t) for w, t in self.weighted_terms))

    __rmul__ = __mul__

    @property
    def terms(self) -> tuple[Term, ...]:
        return tuple(term for _, term in self.weighted_terms)

    @property
    def record_type(self) -> type:
        return self.weighted_terms[0][1].record_type

    @property
    def needs_reference(self) -> bool:
        return any(t.needs_reference for t in self.terms)

    @property
    def needs_rejected(self) -> bool:
        return any(t.needs_rejected for t in self.terms)

    @property
    def needs_token_logps(self) -> bool:
        return any(t.needs_token_logps for t in self.terms)

    def labels(self) -> list[str]:
        """A unique label per term: its name, suffixed ``#2``... when a name repeats."""
        seen: dict[str, int] = {}
        labels = []
        for term in self.terms:
            seen[term.name] = seen.get(term.name, 0) + 1
            labels.append(term.name if seen[term.name] == 1 else f"{term.name}#{seen[term.name]}")
        return labels

    def __str__(self) -> str:
        parts = []
        for weight, term in self.weighted_terms:
            parts.append(term.name if weight == 1.0 else f"{weight:g}*{term.name}")
        return " + ".join(parts)

    def describe(self) -> str:
        """Every term with all its hyper-parameters, parseable back by :func:`parse`."""
        return " + ".join(f"{w!r}*{t.describe()}" for w, t in self.weighted_terms)

    def __call__(self, record: Record) -> ObjectiveOutput:
        if not isinstance(record, self.record_type):
            raise SpecError(f"objective '{self}' reads {self.record_type.__name__}, got {type(record).__name__}")
        term_losses: dict[str, Tensor] = {}
        total: Tensor | None = None
        for label, (weight, term) in zip(self.labels(), self.weighted_terms, strict=True):
            value = term.loss(record)
            term_losses[label] = value
            total = weight * value if total is None else total + weight * value
        assert total is not None
        from preftune.objectives.metrics import group_metrics, pair_metrics

        with torch.no_grad():
            if isinstance(record, PairRecord):
                beta, average = self.margin_settings()
                metrics = pair_metrics(record, beta=beta, average=average)
            else:
                metrics = group_metrics(record)
        return ObjectiveOutput(loss=total, terms=term_losses, metrics=metrics)

    def margin_settings(self) -> tuple[float, bool]:
        """β and averaging of the first term built on the margin h (for the reward metrics);
        β = 0.1 with sums when no term is."""
        for term in self.terms:
            if term.builds_margin:
                return float(term.beta), bool(term.average)  # type: ignore[attr-defined]
        return 0.1, False
