"""What values a term's hyper-parameters and an objective's weights may take: checked in one place.

Every term is a frozen dataclass; :func:`check_params` reads each field's declared type (``float``,
``int``, ``bool``, ``str``, ``Literal[...]``) and its bounds (declared with :func:`param`) and
refuses anything else with one line naming the term and the parameter. Numbers must be finite and
bools never count as numbers, so a term built in Python accepts exactly what :func:`parse` accepts.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import typing
from dataclasses import dataclass
from typing import Any, Literal

from preftune.errors import SpecError


@dataclass(frozen=True)
class Bounds:
    """An interval for a numeric hyper-parameter; ``None`` leaves a side open."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def contains(self, x: float) -> bool:
        return (
            (self.gt is None or x > self.gt)
            and (self.ge is None or x >= self.ge)
            and (self.lt is None or x < self.lt)
            and (self.le is None or x <= self.le)
        )

    def __str__(self) -> str:
        """``in [0, 0.5)`` for an interval, ``> 0`` or ``>= 0`` for one side."""
        low = ("(", self.gt) if self.gt is not None else ("[", self.ge) if self.ge is not None else None
        high = (")", self.lt) if self.lt is not None else ("]", self.le) if self.le is not None else None
        if low and high:
            return f"in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        if low:
            return f"{'>' if low[0] == '(' else '>='} {low[1]:g}"
        assert high is not None
        return f"{'<' if high[0] == ')' else '<='} {high[1]:g}"


def param(
    default: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> Any:
    """A dataclass field with a default and bounds, e.g. ``beta: float = param(0.1, gt=0)``."""
    return dataclasses.field(default=default, metadata={"bounds": Bounds(gt=gt, ge=ge, lt=lt, le=le)})


def _bounds(cls: type, name: str) -> Bounds | None:
    # A subclass that only changes a default (dpop's delta) keeps the bounds its base declared.
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "bounds" in f.metadata:
            return f.metadata["bounds"]
    return None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Field name -> declared type, resolving string annotations (``from __future__ import annotations``)."""
    try:
        return typing.get_type_hints(cls)
    except Exception:  # a user's annotation that cannot be resolved: fall back to field.type / the default
        return {}


def _declared_type(cls: type, f: dataclasses.Field) -> Any:
    hint = _hints(cls).get(f.name, f.type)
    if isinstance(hint, str) and f.default is not dataclasses.MISSING:
        return type(f.default)
    return hint


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


def is_number(value: object) -> bool:
    """A real number that is not a bool (``True`` is an int to Python, never a hyper-parameter)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _checked(where: str, hint: Any, value: object) -> object:
    """``value`` normalised to its declared type (ints to float for a float field), or a SpecError."""
    if hint is bool:
        if not isinstance(value, bool):
            raise SpecError(f"{where} must be bool (True or False), got {_describe(value)}")
        return value
    if hint is float:
        if not is_number(value):
            raise SpecError(f"{where} must be a number, got {_describe(value)}")
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            raise SpecError(f"{where} must be finite, got {number}")
        return number
    if hint is int:
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise SpecError(f"{where} must be an integer, got {_describe(value)}")
        return int(value)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        if not any(type(value) is type(c) and value == c for c in choices):
            raise SpecError(f"{where} must be one of {', '.join(map(repr, choices))}, got {_describe(value)}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise SpecError(f"{where} must be {hint.__name__}, got {_describe(value)}")
    return value  # a type we cannot judge (a union, a user's generic): the term's own checks apply


def check_params(term: object) -> None:
    """Check (and normalise in place) every hyper-parameter of a term dataclass; one-line SpecError."""
    cls = type(term)
    name = getattr(cls, "name", cls.__name__)
    for f in dataclasses.fields(term):  # type: ignore[arg-type]
        where = f"{name}: {f.name}"
        value = getattr(term, f.name)
        checked = _checked(where, _declared_type(cls, f), value)
        bounds = _bounds(cls, f.name)
        if bounds is not None and is_number(checked) and not bounds.contains(checked):  # type: ignore[arg-type]
            raise SpecError(f"{where} must be {bounds}, got {checked}")
        if checked is not value:
            object.__setattr__(term, f.name, checked)  # frozen: normalise 1 -> 1.0 once, at construction


def check_weight(weight: object, term_name: str) -> float:
    """An objective weight as a float: a finite number > 0, as :func:`parse` requires."""
    if not is_number(weight):
        raise SpecError(f"objective weights must be numbers, got {_describe(weight)} for '{term_name}'")
    value = float(weight)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise SpecError(f"objective weights must be finite, got {value} for '{term_name}'")
    if not value > 0:
        raise SpecError(f"objective weights must be > 0, got {value:g} for '{term_name}'")
    return value
