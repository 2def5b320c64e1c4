"""Rows as read from a source, before any format is applied (:class:`RawRows`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from preftune.data.examples import Origin


@dataclass
class RawRows:
    """Rows as read, before any format is applied.

    Attributes:
        name: how error messages name the source (a file name or a dataset name).
        rows: one dict per row, in source order; every row has every column (``None`` where absent).
        columns: the column names, in table order.
        origins: where each row is, as errors name it; ``None`` means row ``i`` is ``rows[i - 1]`` of
            ``name``. In a JSON Lines file row N is the row on line N, so that a dropped line
            does not renumber the rows after it.
        dropped: lines or rows that could not be read and were dropped (``skip_invalid``), by reason.
    """

    name: str
    rows: list[dict[str, Any]]
    columns: list[str] = field(default_factory=list)
    origins: list[Origin] | None = None
    dropped: dict[str, int] = field(default_factory=dict)

    def origin(self, index: int) -> Origin:
        """Where ``rows[index]`` came from."""
        return self.origins[index] if self.origins is not None else Origin(self.name, index + 1)

    @property
    def rows_read(self) -> int:
        """Rows in the source, those dropped while reading included."""
        return len(self.rows) + sum(self.dropped.values())


def column_names(rows: list[dict[str, Any]]) -> list[str]:
    """The union of the rows' keys, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def fill_columns(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    """Every row with every column, ``None`` where a row lacks one (as a ``datasets`` table gives them)."""
    return [row if len(row) == len(columns) else {name: row.get(name) for name in columns} for row in rows]
