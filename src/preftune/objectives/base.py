"""Terms, their weighted sums, and what a call returns.

A :class:`Term` is one named loss (``dpo``, ``exmate``...) with its hyper-parameters; an
:class:`Objective` is a weighted sum of terms over the same kind of record. Calling an
objective returns the per-example loss, each term's per-example loss and the metrics of
docs/methods.md §6, all ``[B]`` tensors so that a trainer can reduce them across processes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from preftune.errors import SpecError
from preftune.objectives.params import check_params, check_weight, is_number
from preftune.objectives.records import GroupRecord, PairRecord, Record

NO_SUBTRACTION = "terms are added with positive weights; subtraction is not allowed"
DIVIDE_BY_TERM = "an objective can be divided by a number, not a number by a term"


class _PositiveSums:
    """What a sum of terms with positive weights refuses: subtraction, negation, a number over a term."""

    def __rtruediv__(self, other: object) -> Objective:
        raise SpecError(DIVIDE_BY_TERM)

    def __sub__(self, other: object) -> Objective:
        raise SpecError(NO_SUBTRACTION)

    __rsub__ = __sub__

    def __neg__(self) -> Objective:
        raise SpecError(NO_SUBTRACTION)


@dataclass(frozen=True)
class Term(_PositiveSums):
    """One loss term. Subclasses are frozen dataclasses whose fields are hyper-parameters.

    Every field is checked on construction against its declared type and its bounds, declared
    with :func:`~preftune.objectives.params.param` (``beta: float = param(0.1, gt=0)``); a
    subclass's own ``__post_init__`` must call ``super().__post_init__()`` (an objective checks
    its terms again anyway).

    Class attributes say what the term reads, so a trainer can check a setup before it runs:
    ``record_type`` (pairs or groups), ``needs_rejected``, ``needs_reference``,
    ``needs_token_logps``, ``needs_reference_tokens`` (the reference's per-token log-probs too: LD-DPO),
    ``needs_collision`` (WPO's per-token log Σ_v π(v)²), ``needs_mismatched``
    (the batch's mismatched pairs' KL estimate, ``kto``), ``sorts_batch`` (each value depends on the
    whole batch, not on one example); and ``fits_unpaired``: whether it reads the chosen and the
    rejected response each on its own, so unpaired good and bad examples (``data.bad``: two responses
    to different prompts) fit it.
    """

    name: ClassVar[str]
    record_type: ClassVar[type] = PairRecord
    needs_rejected: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_token_logps: ClassVar[bool] = False
    needs_reference_tokens: ClassVar[bool] = False
    needs_mismatched: ClassVar[bool] = False
    fits_unpaired: ClassVar[bool] = False
    builds_margin: ClassVar[bool] = False  # a term on h with `beta` and `average` (dpo, ipo, hinge)
    needs_collision: ClassVar[bool] = False
    sorts_batch: ClassVar[bool] = False

    def __post_init__(self) -> None:
        # One validator for every term, reading the field types and bounds: no per-term copies.
        check_params(self)

    def loss(self, record: Record) -> Tensor:
        """Per-example loss ``[B]`` (pairs) or ``[P]`` (groups)."""
        raise NotImplementedError

    def describe(self) -> str:
        """``name(key=value, ...)`` with every hyper-parameter, parseable by :func:`parse`."""
        args = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self))
        return f"{self.name}({args})"

    # Python composition, with the same rules as parse(): dpo() + 0.5 * exmate(), (dpo() + mle()) / 2.
    def __add__(self, other: Term | Objective) -> Objective:
        return Objective.of(self) + other

    def __radd__(self, other: object) -> Objective:
        return Objective.of(other) + self  # reached only for a non-term on the left: `of` refuses it

    def __mul__(self, weight: float) -> Objective:
        return Objective.of(self) * weight

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        return Objective.of(self) / divisor


@dataclass(frozen=True)
class ObjectiveOutput:
    """What an objective returns for one batch.

    Attributes:
        loss: ``[B]`` weighted per-example loss; ``loss.mean()`` is what a trainer minimises.
        terms: term label -> ``[B]`` unweighted per-example loss of that term.
        metrics: metric name -> ``[B]`` per-example value, detached (docs/methods.md §6).
    """

    loss: Tensor
    terms: dict[str, Tensor]
    metrics: dict[str, Tensor]


@dataclass(frozen=True)
class Objective(_PositiveSums):
    """A weighted sum of terms, e.g. ``dpo + 0.5*exmate``.

    Every term must read the same kind of record (pairs or groups); the constructor refuses a
    mix, so a bad combination fails when the config is read, not mid-run.
    """

    weighted_terms: tuple[tuple[float, Term], ...] = field(default=())

    def __post_init__(self) -> None:
        pairs = self.weighted_terms
        if not isinstance(pairs, tuple | list):
            kind = type(pairs).__name__
            raise SpecError(f"Objective takes (weight, term) pairs, got {kind}; Objective.of(term) wraps one term")
        if not pairs:
            raise SpecError("an objective needs at least one term")
        checked = []
        for pair in pairs:
            if not (isinstance(pair, tuple | list) and len(pair) == 2):
                raise SpecError(f"an objective holds (weight, term) pairs, got {type(pair).__name__} {pair!r}")
            weight, term = pair
            if not isinstance(term, Term):
                raise SpecError(f"an objective holds terms such as dpo(), got {type(term).__name__} {term!r}")
            # Again here, for a user's term whose own __post_init__ does not call Term's.
            check_params(term)
            checked.append((check_weight(weight, term.name), term))
        object.__setattr__(self, "weighted_terms", tuple(checked))
        kinds = {term.record_type for _, term in self.weighted_terms}
        if len(kinds) > 1:
            pair_names = [t.name for _, t in self.weighted_terms if t.record_type is PairRecord]
            group_names = [t.name for _, t in self.weighted_terms if t.record_type is GroupRecord]
            raise SpecError(
                f"cannot combine pairwise terms {pair_names} with sampled-group terms {group_names}: "
                "they read different data (pairs vs C samples per prompt with rewards)"
            )

    @classmethod
    def of(cls, term: object) -> Objective:
        """``term`` as an objective (weight 1); an objective as is; anything else refused."""
        if isinstance(term, Objective):
            return term
        if isinstance(term, Term):
            return cls(((1.0, term),))
        raise SpecError(
            f"cannot add {type(term).__name__} {term!r} to an objective: add terms, e.g. dpo() + 0.5*exmate()"
        )

    def __add__(self, other: Term | Objective) -> Objective:
        return Objective(self.weighted_terms + Objective.of(other).weighted_terms)

    def __radd__(self, other: object) -> Objective:
        return Objective.of(other) + self

    def __mul__(self, weight: float) -> Objective:
        if isinstance(weight, Term | Objective):
            raise SpecError("a product must be a number times a term, not two terms")
        check_weight(weight, str(self))  # the factor itself, before it multiplies the weights
        return Objective(tuple((w * float(weight), t) for w, t in self.weighted_terms))

    __rmul__ = __mul__

    def __truediv__(self, divisor: float) -> Objective:
        if isinstance(divisor, Term | Objective):
            raise SpecError(DIVIDE_BY_TERM)
        if not (is_number(divisor) and math.isfinite(divisor) and divisor > 0):  # type: ignore[arg-type]
            raise SpecError(f"an objective can only be divided by a finite number > 0, got {divisor!r}")
        return Objective(tuple((w / float(divisor), t) for w, t in self.weighted_terms))

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

    @property
    def needs_reference_tokens(self) -> bool:
        return any(t.needs_reference_tokens for t in self.terms)

    @property
    def needs_collision(self) -> bool:
        return any(t.needs_collision for t in self.terms)

    @property
    def sorts_batch(self) -> bool:
        return any(t.sorts_batch for t in self.terms)

    @property
    def needs_mismatched(self) -> bool:
        return any(t.needs_mismatched for t in self.terms)

    @property
    def fits_unpaired(self) -> bool:
        return all(t.fits_unpaired for t in self.terms)

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
                if not any(term.builds_margin for term in self.terms):  # no β: implicit rewards mean nothing
                    metrics = {k: v for k, v in metrics.items() if not k.startswith("rewards/")}
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
