"""Tidy tables of analysis numbers: one row per (objective, x, series), as the report writes them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple


class Row(NamedTuple):
    """One number: ``value`` of ``series`` at ``x`` for ``objective`` (the spec string)."""

    objective: str
    x: float
    series: str
    value: float


@dataclass(frozen=True)
class Analysis:
    """The numbers behind one plot.

    Attributes:
        name: stable file stem, e.g. ``"weight_vs_probability"``.
        title: one-line title of the plot.
        x: what ``Row.x`` means, per series prefix where it differs.
        value: what ``Row.value`` means, per series.
        expected: the expected behaviour (docs/methods.md §3), one line.
        rows: the tidy table.
        settings: the synthetic setup (n, grids, vocabulary...), for the JSON.
    """

    name: str
    title: str
    x: str
    value: str
    expected: str
    rows: list[Row]
    settings: dict[str, object] = field(default_factory=dict)

    def objectives(self) -> list[str]:
        """Objectives in first-seen order."""
        return list(dict.fromkeys(r.objective for r in self.rows))

    def series(self, objective: str, series: str) -> tuple[list[float], list[float]]:
        """``(xs, values)`` of one curve, in table order."""
        pairs = [(r.x, r.value) for r in self.rows if r.objective == objective and r.series == series]
        return [x for x, _ in pairs], [v for _, v in pairs]

    def at(self, objective: str, series: str, x: float) -> float:
        """The value of a curve at the grid point nearest to ``x``."""
        xs, values = self.series(objective, series)
        if not xs:
            raise KeyError(f"no series '{series}' for '{objective}' in {self.name}")
        return values[min(range(len(xs)), key=lambda i: abs(xs[i] - x))]


def rows(objective: str, series: str, xs: Sequence[float], values: Iterable[float]) -> list[Row]:
    """Rows of one curve."""
    return [Row(objective, float(x), series, float(v)) for x, v in zip(xs, values, strict=True)]
