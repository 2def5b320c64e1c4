"""``load_preference_data``: a source -> validated preference examples and a summary."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from preftune.data.columns import apply_columns
from preftune.data.examples import PreferenceExample
from preftune.data.formats import RowParser, resolve_format, row_parser
from preftune.data.labelled import TIE_REASON, LabelledParser, LabelSpec, refuse_reversible_mapping
from preftune.data.rows import RawRows
from preftune.data.sources import load_rows
from preftune.data.summary import DataSummary
from preftune.data.validation import Tally, check_example, validate_rows
from preftune.errors import PreftuneError


def no_valid_rows(source: str, tally: Tally) -> PreftuneError:
    reasons = "; ".join(f"{reason} x{n}" for reason, n in tally.as_dict().items())
    return PreftuneError(f"{source}: no valid rows left ({tally.total} dropped: {reasons})")


NO_PAIR = "no pair (fewer than two distinct ranks, or none far enough apart)"


def load_preference_data(
    source: str | Path,
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    pairing: str = "best_vs_worst",
    skip_invalid: bool = False,
    split: str | None = None,
    tree_turns: str = "all",
    labels: LabelSpec | Mapping[str, Any] | None = None,
    score_gap: float = 0.0,
) -> tuple[list[PreferenceExample], DataSummary]:
    """Read preference data and validate every row before anything else happens.

    Args:
        source: a file (jsonl, json, csv, tsv, parquet; gz/bz2/xz compressed or not), a folder of
            such files or one written by ``save_to_disk``, or a Hub name.
        format: ``"auto"`` or one of ``standard``, ``conversational``, ``implicit``, ``ranked``,
            ``oasst``, ``labelled`` (see :mod:`preftune.data.formats`).
        columns: maps expected column names to the file's, e.g. ``{"chosen": "chosen_response"}``.
        pairing: for ranked data, ``"best_vs_worst"`` (one pair per ranked group) or ``"all"``
            (every ordered pair of distinct ranks, the better as chosen).
        skip_invalid: drop bad rows (and lines that cannot be read) and count them by reason in
            the summary, instead of raising on the first one.
        split: the split of a folder or Hub dataset (default: 'train', or the only one).
        tree_turns: for message trees, ``"all"`` ranked turns or only the ``"first"`` (replies to the root).
        score_gap: for ranked data with ``pairing="all"``, only pairs whose scores (or ranks) differ
            by more than this (P3's pairs above a reward gap).
        labels: for labelled pairs, where the label is and what its values mean
            (:class:`~preftune.data.labelled.LabelSpec`, or a mapping / config with its fields).

    Returns:
        The examples, in source order, and a :class:`DataSummary`. Labelled ties are dropped
        and counted (never an error).

    Raises:
        PreftuneError: one line naming the file, row and field of the first bad row (unless
            ``skip_invalid``), or why the source cannot be read.
    """
    spec = LabelSpec.coerce(labels)
    original = load_rows(source, split, skip_invalid=skip_invalid)
    raw = apply_columns(original, columns)
    if format == "auto":
        refuse_reversible_mapping(original, columns, spec)
    chosen_format = resolve_format(raw, format)
    parse = row_parser(chosen_format, pairing=pairing, tree_turns=tree_turns, raw=raw, labels=spec, min_gap=score_gap)
    tally = Tally()
    examples = _validated_examples(raw, parse, skip_invalid, tally)
    label_counts = parse.label_counts() if isinstance(parse, LabelledParser) else {}
    summary = DataSummary(raw.name, chosen_format, raw.rows_read, len(examples), tally.as_dict(), labels=label_counts)
    return examples, summary


def _validated_examples(raw: RawRows, parse: RowParser, skip_invalid: bool, tally: Tally) -> list[PreferenceExample]:
    """Every row parsed and checked (bad ones counted in ``tally`` when skipped); refused when none is left."""
    # a row that yields no example is a tie for labelled data, else a ranked group without a pair
    no_item = TIE_REASON if isinstance(parse, LabelledParser) else NO_PAIR
    examples = validate_rows(
        raw,
        parse,
        check_example,
        skip_invalid=skip_invalid,
        tally=tally,
        origin_of=lambda example: example.origin,
        no_item_reason=no_item,
    )
    if not examples:
        raise no_valid_rows(raw.name, tally)
    return examples
