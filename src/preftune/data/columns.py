"""Column names: the names the formats expect, mapping a file's names onto them, and the hint
for a missing one.

The hint names the ``data.columns`` settings that map the file's columns onto every name the
format still lacks: the closest column found for each (one containing the name, difflib's closest
match, or a column named by a common synonym: ``question`` for ``prompt``, ``good``/``bad`` for
``chosen``/``rejected``), and ``COLUMN`` where nothing fits::

    d.jsonl: no 'chosen' column; found ['question', 'good', 'bad']; map the file's columns onto the expected
    names, e.g. data.columns.prompt=question data.columns.chosen=good data.columns.rejected=bad
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import replace

from preftune.data.rows import RawRows
from preftune.errors import PreftuneError

EXPECTED = (
    "prompt",
    "chosen",
    "rejected",
    "completions",
    "ranks",
    "scores",
    "completion",
    "label",
    "response_1",
    "response_2",
    "instruction",
    "input",
)
"""The names ``data.columns`` can map a file's columns onto (``{"chosen": "chosen_response"}``)."""


SYNONYMS: dict[str, tuple[str, ...]] = {
    "prompt": (
        "question",
        "query",
        "instruction",
        "input",
        "context",
        "request",
        "history",
        "conversation",
        "dialogue",
        "post",
        "message",
        "text",
    ),
    "chosen": ("good", "better", "best", "preferred", "positive", "pos", "accepted", "winner", "win", "selected"),
    "rejected": ("bad", "worse", "worst", "dispreferred", "negative", "neg", "declined", "loser", "lose", "lost"),
    "completions": ("responses", "outputs", "answers", "candidates", "generations", "samples"),
    "completion": ("response", "output", "answer", "generation", "reply"),
    "scores": ("score", "rewards", "reward", "ratings", "rating"),
    "ranks": ("rank", "ranking", "rankings", "order"),
}
"""Words that name an expected column in other datasets, read as whole words of a column's name."""


def closest(name: str, found: list[str]) -> str | None:
    """The column most like ``name``: one containing it, else difflib's closest match."""
    containing = [c for c in found if name in c.lower()]
    if containing:
        return min(containing, key=len)
    matches = difflib.get_close_matches(name, found, n=1, cutoff=0.5)
    return matches[0] if matches else None


def synonym(name: str, found: list[str]) -> str | None:
    """The one column of ``found`` whose name has a word that means ``name`` (``good_answer`` for chosen)."""
    words = set(SYNONYMS.get(name, ()))
    matches = [c for c in found if words & set(re.split(r"[^a-z0-9]+", c.lower()))]
    return matches[0] if len(matches) == 1 else None


def guess_columns(columns: list[str], names: tuple[str, ...]) -> dict[str, str]:
    """For each of ``names`` missing from ``columns``, the file column that likely holds it, where one does.

    A column goes to one name at most, and never one that already has an expected name.
    """
    free = [c for c in columns if c not in EXPECTED]
    guesses: dict[str, str] = {}
    for name in names:
        if name in columns:
            continue
        left = [c for c in free if c not in guesses.values()]
        guess = closest(name, left) or synonym(name, left)
        if guess is not None:
            guesses[name] = guess
    return guesses


def _order(name: str) -> int:
    return EXPECTED.index(name) if name in EXPECTED else len(EXPECTED)


def mapping_hint(columns: list[str], names: tuple[str, ...]) -> str:
    """The ``data.columns`` settings that give the file every one of ``names`` (``COLUMN`` where none fits).

    ``"did you mean 'x'? (set data.columns.chosen=x)"`` when one name is missing and a column fits it.
    """
    missing = sorted((name for name in names if name not in columns), key=_order)
    if not missing:
        return ""
    guesses = guess_columns(columns, tuple(missing))
    if len(missing) == 1 and missing[0] in guesses:
        name = missing[0]
        return f"did you mean '{guesses[name]}'? (set data.columns.{name}={guesses[name]})"
    settings = " ".join(f"data.columns.{name}={guesses.get(name, 'COLUMN')}" for name in missing)
    lead = ", e.g." if guesses else " with"
    return f"map the file's columns onto the expected names{lead} {settings}"


def missing_column(raw: RawRows, name: str, why: str = "", needed: tuple[str, ...] = ()) -> PreftuneError:
    """``data.jsonl: no 'chosen' column; found [...]; `` and the settings that map the columns.

    ``needed``: every name the format reads (``name`` first when absent), so that one message names
    the settings for all the missing ones, e.g. ``data.columns.chosen=good data.columns.rejected=bad``.
    """
    names = (name, *(other for other in needed if other != name))
    message = f"{raw.name}: no '{name}' column{why}; found {raw.columns}"
    hint = mapping_hint(raw.columns, names)
    return PreftuneError(f"{message}; {hint}" if hint else message)


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
