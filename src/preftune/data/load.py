"""``load_preference_data``: a source -> validated preference examples and a summary."""

from __future__ import annotations

from pathlib import Path

from preftune.data.examples import PreferenceExample
from preftune.data.formats import apply_columns, resolve_format, row_parser
from preftune.data.sources import load_rows
from preftune.data.summary import DataSummary
from preftune.data.validation import Tally, check_example, validate_rows
from preftune.errors import PreftuneError


def no_valid_rows(source: str, tally: Tally) -> PreftuneError:
    reasons = "; ".join(f"{reason} x{n}" for reason, n in tally.as_dict().items())
    return PreftuneError(f"{source}: no valid rows left ({tally.total} dropped: {reasons})")


def load_preference_data(
    source: str | Path,
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    pairing: str = "best_vs_worst",
    skip_invalid: bool = False,
    split: str | None = None,
    tree_turns: str = "all",
) -> tuple[list[PreferenceExample], DataSummary]:
    """Read preference data and validate every row before anything else happens.

    Args:
        source: a file (jsonl, json, jsonl.gz, parquet, csv), a ``datasets`` folder or a Hub name.
        format: ``"auto"`` or one of ``standard``, ``conversational``, ``implicit``, ``ranked``,
            ``oasst`` (see :mod:`preftune.data.formats`).
        columns: maps expected column names to the file's, e.g. ``{"chosen": "chosen_response"}``.
        pairing: for ranked data, ``"best_vs_worst"`` (one pair per ranked group) or ``"all"``
            (every ordered pair of distinct ranks, the better as chosen).
        skip_invalid: drop bad rows and count them by reason in the summary, instead of raising
            on the first one.
        split: the split of a folder or Hub dataset.
        tree_turns: for message trees, ``"all"`` ranked turns or only the ``"first"`` (replies to the root).

    Returns:
        The examples, in source order, and a :class:`DataSummary`.

    Raises:
        PreftuneError: one line naming the file, row and field of the first bad row (unless
            ``skip_invalid``), or why the source cannot be read.
    """
    raw = apply_columns(load_rows(source, split), columns)
    chosen_format = resolve_format(raw, format)
    parse = row_parser(chosen_format, pairing=pairing, tree_turns=tree_turns)
    tally = Tally()
    examples = validate_rows(
        raw.name,
        raw.rows,
        parse,
        check_example,
        skip_invalid=skip_invalid,
        tally=tally,
        origin_of=lambda example: example.origin,
    )
    if not examples:
        raise no_valid_rows(raw.name, tally)
    summary = DataSummary(raw.name, chosen_format, len(raw.rows), len(examples), tally.as_dict())
    return examples, summary
