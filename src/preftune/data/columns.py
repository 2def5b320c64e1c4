"""Column names: the names the formats expect, mapping a file's names onto them, and the hint
for a missing one (the closest column found, and the ``data.columns`` setting that maps it)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import replace

from preftune.data.rows import RawRows
from preftune.errors import PreftuneError

EXPECTED = (
    "prompt", "chosen", "rejected", "completions", "ranks", "scores", "completion", "label",
    "response_1", "response_2", "instruction", "input",
)  # fmt: skip
"""The names ``data.columns`` can map a file's columns onto (``{"chosen": "chosen_response"}``)."""


def closest(name: str, found: list[str]) -> str | None:
    """The column most like ``name``: one containing it, else difflib's closest match."""
    containing = [c for c in found if name in c.lower()]
    if containing:
        return min(containing, key=len)
    matches = difflib.get_close_matches(name, found, n=1, cutoff=0.5)
    return matches[0] if matches else None


def missing_column(raw: RawRows, name: str, why: str = "") -> PreftuneError:
    """``data.jsonl: no 'chosen' column; found [...]; did you mean 'x'? (set data.columns.chosen=x)``."""
    unclaimed = [c for c in raw.columns if c not in EXPECTED]
    guess = closest(name, unclaimed)
    message = f"{raw.name}: no '{name}' column{why}; found {raw.columns}"
    if guess:
        message += f"; did you mean '{guess}'? (set data.columns.{name}={guess})"
    return PreftuneError(message)


def apply_columns(raw: RawRows, columns: Mapping[str, str] | None) -> RawRows:
    """Rename the file's columns to the expected names: ``columns`` maps expected -> found."""
    if not columns:
        return raw
    for expected, found in columns.items():
        if expected not in EXPECTED:
            raise PreftuneError(f"data.columns: unknown name '{expected}' (expected one of {', '.join(EXPECTED)})")
        if found not in raw.columns:
            guess = closest(found, raw.columns)
            hint = f"; did you mean '{guess}'? (set data.columns.{expected}={guess})" if guess else ""
            raise PreftuneError(
                f"{raw.name}: data.columns.{expected}={found} names no column; found {raw.columns}{hint}"
            )
    renamed = {found: expected for expected, found in columns.items()}

    def keep(key: str) -> bool:  # drop a column whose name is taken over by a mapped one
        return key in renamed or key not in columns

    rows = [{renamed.get(key, key): value for key, value in row.items() if keep(key)} for row in raw.rows]
    names = list(dict.fromkeys(renamed.get(c, c) for c in raw.columns if keep(c)))
    return replace(raw, rows=rows, columns=names)
