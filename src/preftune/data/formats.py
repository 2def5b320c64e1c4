"""Preference data formats: detection, column mapping, and row -> example parsing.

Formats (``format=`` of :func:`preftune.data.load_preference_data`):

- ``"standard"``: ``prompt``/``chosen``/``rejected`` strings (TRL's standard format);
- ``"conversational"``: the same columns holding ``{role, content}`` message lists, the
  responses holding the assistant turn(s) (TRL's conversational format);
- ``"implicit"``: only ``chosen``/``rejected``, full dialogues sharing a prefix, as message lists
  or HH-RLHF transcripts (see :mod:`preftune.data.dialogues`); like TRL, a ``prompt`` column that
  is text while the dialogues are message lists is ignored;
- ``"ranked"``: ``prompt``, ``completions``, ``ranks`` or ``scores`` (see :mod:`preftune.data.ranked`);
- ``"oasst"``: OpenAssistant message trees in a ``prompt`` column;
- ``"labelled"``: a prompt, two responses and a label saying which is better (AlpacaEval,
  LLMBar, PandaLM; see :mod:`preftune.data.labelled`).

``"auto"`` picks one from the column names and the first row: ``labelled`` when there is no
``chosen``/``rejected`` but two response columns (``output_1``/``output_2``, ``response1``/
``response2``...). A missing column is reported with the columns found and the closest one
(``difflib``); ``columns={"chosen": "chosen_response"}`` (``data.columns.chosen=chosen_response``)
maps the expected names onto the file's (:mod:`preftune.data.columns`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from preftune.data.columns import EXPECTED, apply_columns, closest, missing_column
from preftune.data.dialogues import is_hh_transcript, parse_implicit
from preftune.data.examples import Origin, PreferenceExample
from preftune.data.labelled import LabelledParser, LabelSpec, response_columns
from preftune.data.ranked import PAIRINGS, TREE_TURNS, parse_ranked, parse_tree
from preftune.data.rows import RawRows
from preftune.data.validation import as_messages, as_text, is_messages
from preftune.errors import PreftuneError

__all__ = ["EXPECTED", "FORMATS", "apply_columns", "closest", "detect_format", "missing_column", "resolve_format"]

FORMATS = ("auto", "standard", "conversational", "implicit", "ranked", "oasst", "labelled")
REQUIRED = {
    "standard": ("chosen", "rejected", "prompt"),
    "conversational": ("chosen", "rejected", "prompt"),
    "implicit": ("chosen", "rejected"),
    "ranked": ("prompt", "completions"),
    "oasst": ("prompt",),
}

RowParser = Callable[[dict[str, Any], Origin], list[PreferenceExample]]


def _first(raw: RawRows, column: str) -> Any:
    return next((row[column] for row in raw.rows if row.get(column) is not None), None)


def detect_format(raw: RawRows) -> str:
    """The format of ``raw`` from its columns and first non-null values."""
    columns = set(raw.columns)
    if "completions" in columns:
        return "ranked"
    prompt = _first(raw, "prompt")
    if isinstance(prompt, dict) and "replies" in prompt:
        return "oasst"
    if "chosen" not in columns and "rejected" not in columns and response_columns(raw.columns):
        return "labelled"
    for name in ("chosen", "rejected"):
        if name not in columns:
            raise missing_column(raw, name, needed=REQUIRED["standard"])
    chosen = _first(raw, "chosen")
    if "prompt" in columns and not (is_messages(chosen) and not is_messages(prompt)):
        return "conversational" if is_messages(prompt) else "standard"
    if is_messages(chosen) or is_hh_transcript(chosen):
        return "implicit"
    raise missing_column(raw, "prompt", " (and 'chosen' holds neither message lists nor HH transcripts)")


def resolve_format(raw: RawRows, format: str) -> str:
    """``format``, or the detected one for ``"auto"``; refuses one whose columns are missing."""
    if format not in FORMATS:
        raise PreftuneError(f"unknown data format '{format}' (expected one of {', '.join(FORMATS)})")
    chosen = detect_format(raw) if format == "auto" else format
    if chosen == "labelled":
        return chosen  # its columns have other names: LabelledParser finds them
    for name in REQUIRED[chosen]:
        if name not in raw.columns:
            raise missing_column(raw, name, needed=REQUIRED[chosen])
    if chosen == "ranked" and not {"ranks", "scores"} & set(raw.columns):
        raise missing_column(raw, "ranks", " (nor 'scores')")
    return chosen


def _parse_explicit(row: dict[str, Any], origin: Origin, *, conversational: bool) -> list[PreferenceExample]:
    parse = as_messages if conversational else as_text
    return [PreferenceExample(*(parse(row.get(key), key) for key in ("prompt", "chosen", "rejected")), origin)]


def _parse_implicit(row: dict[str, Any], origin: Origin) -> list[PreferenceExample]:
    return [PreferenceExample(*parse_implicit(row.get("chosen"), row.get("rejected")), origin)]


def row_parser(
    format: str,
    *,
    pairing: str = "best_vs_worst",
    tree_turns: str = "all",
    raw: RawRows | None = None,
    labels: LabelSpec | None = None,
    min_gap: float = 0.0,
) -> RowParser:
    """The function turning one row of ``format`` into examples (a ranked row may give several).

    ``labelled`` needs the rows (``raw``, to find its columns) and reads ``labels``; its parser
    is a :class:`~preftune.data.labelled.LabelledParser`, which counts the label outcomes.
    """
    if format == "labelled":
        if raw is None:
            raise ValueError("the labelled format needs the rows (raw=) to find its columns")
        return LabelledParser(raw, labels or LabelSpec())
    if pairing not in PAIRINGS:
        raise PreftuneError(f"unknown pairing '{pairing}' (expected one of {', '.join(PAIRINGS)})")
    if tree_turns not in TREE_TURNS:
        raise PreftuneError(f"unknown tree_turns '{tree_turns}' (expected one of {', '.join(TREE_TURNS)})")
    parsers: dict[str, RowParser] = {
        "standard": partial(_parse_explicit, conversational=False),
        "conversational": partial(_parse_explicit, conversational=True),
        "implicit": _parse_implicit,
        "ranked": partial(parse_ranked, pairing=pairing, min_gap=min_gap),
        "oasst": partial(parse_tree, pairing=pairing, tree_turns=tree_turns, min_gap=min_gap),
    }
    return parsers[format]
