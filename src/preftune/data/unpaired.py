"""Unpaired good and bad examples (P1's setting, for ``mle``, ``ul``, ``exmate``).

Good and bad examples come from separate sets, each row a ``prompt`` and a ``completion`` (TRL's
unpaired names; strings, or message lists for conversational data). Alternatively one source in
TRL's unpaired preference format holds both, told apart by a boolean ``label`` (True = good).

They become :class:`PreferenceExample` s whose chosen and rejected come from different rows:
both sets are shuffled with a seeded generator and the shorter set is cycled, so every example
of the larger set appears exactly once and those of the smaller set once or more
(``max(n_good, n_bad)`` examples). ``rejected_prompt`` holds the bad example's own prompt: the
rejected row of a token batch is that prompt followed by the bad completion.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.data.columns import apply_columns, missing_column
from preftune.data.examples import Origin, PreferenceExample, Text
from preftune.data.load import no_valid_rows
from preftune.data.rows import RawRows
from preftune.data.sources import load_rows
from preftune.data.summary import DataSummary
from preftune.data.validation import RowProblem, Tally, as_messages, as_text, check_part, is_messages, validate_rows
from preftune.errors import PreftuneError

LABELS = {"true": True, "1": True, "false": False, "0": False}  # bools, and their CSV spellings


@dataclass(frozen=True)
class Completion:
    """One unpaired example: a prompt, a completion, where it came from and its label."""

    prompt: Text
    completion: Text
    origin: Origin
    good: bool

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)


def _parser(label: bool | None) -> Callable[[dict[str, Any], Origin], list[Completion]]:
    def parse(row: dict[str, Any], origin: Origin) -> list[Completion]:
        conversational = is_messages(row.get("prompt"))
        read = as_messages if conversational else as_text
        good = label if label is not None else LABELS.get(str(row.get("label")).lower())
        if good is None:
            raise RowProblem("label", "expected true (good) or false (bad)", f"got {row.get('label')!r}")
        return [Completion(read(row.get("prompt"), "prompt"), read(row.get("completion"), "completion"), origin, good)]

    return parse


def _check(item: Completion) -> None:
    check_part(item.prompt, "prompt", item.is_conversational, response=False)
    check_part(item.completion, "completion", item.is_conversational, response=True)


def _read(
    source: str | Path, label: bool | None, columns: dict[str, str] | None, split: str | None, skip: bool, tally: Tally
) -> tuple[RawRows, list[Completion]]:
    raw = apply_columns(load_rows(source, split, skip_invalid=skip), columns)
    needed = ("prompt", "completion") + (("label",) if label is None else ())
    for name in needed:
        if name not in raw.columns:
            raise missing_column(raw, name, needed=needed)
    items = validate_rows(raw, _parser(label), _check, skip_invalid=skip, tally=tally, origin_of=lambda c: c.origin)
    return raw, items


def pair_unpaired(good: list[Completion], bad: list[Completion], seed: int = 0) -> list[PreferenceExample]:
    """Pair good with bad examples: seeded shuffle of both, the shorter set cycled."""
    rng = random.Random(seed)
    good, bad = good[:], bad[:]
    rng.shuffle(good)
    rng.shuffle(bad)
    return [
        PreferenceExample(
            g.prompt, g.completion, b.completion, g.origin, rejected_prompt=b.prompt, rejected_origin=b.origin
        )
        for g, b in ((good[i % len(good)], bad[i % len(bad)]) for i in range(max(len(good), len(bad))))
    ]


def load_unpaired(
    good_source: str | Path,
    bad_source: str | Path | None = None,
    *,
    columns: dict[str, str] | None = None,
    seed: int = 0,
    skip_invalid: bool = False,
    split: str | None = None,
) -> tuple[list[PreferenceExample], DataSummary]:
    """Load good and bad examples from separate sets and pair them (see the module docstring).

    Args:
        good_source: rows with ``prompt`` and ``completion``, all good; or, when ``bad_source`` is
            None, rows with a boolean ``label`` as well.
        bad_source: rows with ``prompt`` and ``completion``, all bad.
        columns: maps expected column names to the files' (applied to both).
        seed: seed of the shuffles.
        skip_invalid: drop bad rows (counted by reason) instead of raising on the first.
        split: the split of folders or Hub datasets.
    """
    tally = Tally()
    raw_good, items = _read(good_source, None if bad_source is None else True, columns, split, skip_invalid, tally)
    rows_read, name = raw_good.rows_read, raw_good.name
    if bad_source is not None:
        raw_bad, bad_items = _read(bad_source, False, columns, split, skip_invalid, tally)
        items += bad_items
        rows_read, name = rows_read + raw_bad.rows_read, f"{raw_good.name} + {raw_bad.name}"
    good = [c for c in items if c.good]
    bad = [c for c in items if not c.good]
    for kind, chosen in (("good", good), ("bad", bad)):
        if not chosen:
            raise no_valid_rows(f"{name} ({kind} examples)", tally)
    kinds = {c.is_conversational for c in items}
    if len(kinds) > 1:
        first_text = next(c for c in items if c.is_conversational != items[0].is_conversational)
        raise PreftuneError(f"{first_text.origin}: mixes text and conversational examples; use one kind throughout")
    examples = pair_unpaired(good, bad, seed)
    cycled = "bad set cycled" if len(bad) < len(good) else "good set cycled" if len(good) < len(bad) else "equal sizes"
    note = f"unpaired: {len(good)} good, {len(bad)} bad examples; {cycled} (seed {seed})"
    return examples, DataSummary(name, "unpaired", rows_read, len(examples), tally.as_dict(), notes=(note,))
