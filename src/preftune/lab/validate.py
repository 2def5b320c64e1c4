"""Checks shared by the lab's study configs: one :class:`SpecError` line naming the study and the setting."""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping

from preftune.errors import SpecError


def choose(study: str, kind: str, values: object, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``values`` as a non-empty tuple of distinct names from ``allowed``; a misspelling gets a suggestion."""
    if isinstance(values, str) or not isinstance(values, tuple | list):
        raise SpecError(f"{study}: {kind} must be a list of names from {', '.join(allowed)}, got {values!r}")
    if not values:
        raise SpecError(f"{study}: give at least one of the {kind} ({', '.join(allowed)})")
    for value in values:
        if value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f"; choose from {', '.join(allowed)}"
            raise SpecError(f"{study}: unknown {kind[:-1]} '{value}'{hint}")
    twice = sorted({v for v in values if list(values).count(v) > 1})
    if twice:
        raise SpecError(f"{study}: {kind} {', '.join(twice)} given more than once")
    return tuple(values)


def integers_at_least(study: str, config: object, minimums: Mapping[str, int]) -> None:
    """Each ``config.<name>`` an integer (not a bool) of at least ``minimums[name]``."""
    for name, minimum in minimums.items():
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise SpecError(f"{study}: {name} must be an integer ≥ {minimum}, got {value!r}")


def number_in(study: str, name: str, value: object, low: float, high: float) -> None:
    """A finite number in the open interval (low, high)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not (ok and low < value < high):  # type: ignore[operator]
        raise SpecError(f"{study}: {name} must be a number in ({low:g}, {high:g}), got {value!r}")
