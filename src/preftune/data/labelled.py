"""Labelled pairs: two responses and a label saying which is better (format ``"labelled"``).

Judge and human-preference sets give a prompt, two responses in a fixed order and a label,
not a chosen and a rejected response. Mapping the first response to ``chosen`` would train on
reversed pairs wherever the second one won, so these rows are read with their label:

- AlpacaEval annotations: ``instruction``, ``output_1``, ``output_2``, ``preference`` = 1 or 2,
  or a float in [1, 2] from a weighted judge (1.5, and also 0, mean a tie);
- LLMBar: ``input``, ``output_1``, ``output_2``, ``label`` = 1 or 2;
- PandaLM: ``instruction``, ``input``, ``response1``, ``response2`` and three annotators
  ``annotator1..3`` = 1 or 2 (that response is better) or 0 (a tie).

Columns. The responses are the first pair found of ``response_1``/``response_2`` (the names
``data.columns`` maps onto), ``output_1``/``output_2``, ``response1``/``response2``,
``output1``/``output2``. The prompt is ``prompt``; else ``instruction`` and ``input`` (in that
order, as the Alpaca and PandaLM templates put them), those that are not blank, joined by a
blank line (``"\\n\\n"``); else ``input`` alone (LLMBar). The label is
:attr:`LabelSpec.column`, else ``label``, else ``preference``, else every ``annotatorN`` column.

Labels (:class:`LabelSpec`). A value equal to ``first`` says the first response is better, to
``second`` the second, to ``tie`` neither. Values are compared as text (``1``, ``1.0`` and
``"1"`` are equal; case is ignored). When ``first`` and ``second`` are numbers, a number
strictly between them is a weighted label: nearer ``first`` means the first response is better,
nearer ``second`` the second, exactly halfway a tie. Anything else is a row error (file and
row), or a dropped row under ``skip_invalid``. Several label columns (annotators) vote: the
outcome of more than half the votes wins; without such a majority the row is a tie. A missing
(null) vote is a row error.

Ties give no pair: they are dropped and counted (``label: tie``), never an error. The label is
read before the responses, so a tie row is dropped whatever its responses hold. The summary's
``labels`` counts the outcomes of every row whose label was read (see :data:`LABEL_COUNTS`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from preftune.data.columns import closest, missing_column
from preftune.data.examples import Origin, PreferenceExample, Text
from preftune.data.rows import RawRows
from preftune.data.validation import RowProblem, as_messages, as_text, check_part, is_messages, type_name
from preftune.errors import PreftuneError

RESPONSE_PAIRS = (
    ("response_1", "response_2"),
    ("output_1", "output_2"),
    ("response1", "response2"),
    ("output1", "output2"),
)
LABEL_COLUMNS = ("label", "preference")
ANNOTATOR = re.compile(r"^annotator_?(\d+)$")
TIE_REASON = "label: tie (neither response better)"
LABEL_COUNTS = ("first", "second", "tie", "weighted", "not_unanimous", "no_majority")
"""Keys of the label counts: rows whose first/second response is better or that tie; of those,
rows with a weighted label, rows whose annotators disagreed, and ties for want of a majority."""


@dataclass(frozen=True)
class LabelSpec:
    """Where the label of a labelled pair is and what its values mean (``data.labels.*``).

    Attributes:
        column: the label column; several annotator columns comma-separated
            (``"annotator1,annotator2,annotator3"``) vote. None: ``label``, else ``preference``,
            else every ``annotatorN`` column.
        first: the value saying the first response is better.
        second: the value saying the second response is better.
        tie: the value saying neither is (None: none; a weighted label halfway is a tie anyway).
    """

    column: str | None = None
    first: str = "1"
    second: str = "2"
    tie: str | None = "0"

    def __post_init__(self) -> None:
        values = {"first": _norm(self.first), "second": _norm(self.second)}
        if self.tie is not None:
            values["tie"] = _norm(self.tie)
        for key, value in values.items():
            if not value:
                raise PreftuneError(f"data.labels.{key} is empty")
        seen: dict[str, str] = {}
        for key, value in values.items():
            if value in seen:
                raise PreftuneError(f"data.labels.{seen[value]} and data.labels.{key} are both '{value}'")
            seen[value] = key

    @classmethod
    def coerce(cls, value: LabelSpec | Mapping[str, Any] | Any | None) -> LabelSpec:
        """A LabelSpec from itself, None (the defaults), a mapping or any object with its fields (a config)."""
        if value is None or isinstance(value, LabelSpec):
            return value or cls()
        get = value.get if isinstance(value, Mapping) else lambda key, default: getattr(value, key, default)
        names = [f.name for f in fields(cls)]
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(names))
            if unknown:
                raise PreftuneError(f"data.labels: unknown key '{unknown[0]}' (expected one of {', '.join(names)})")
        options = {name: get(name, getattr(cls, name)) for name in names}
        return cls(**{k: v if v is None or k == "column" else str(v) for k, v in options.items()})

    def meaning(self, first: str, second: str) -> str:
        """What the values mean, e.g. ``1 (output_1 better), 2 (output_2 better) or 0 (tie)``."""
        text = f"{self.first} ({first} better), {self.second} ({second} better)"
        return text + (f" or {self.tie} (tie)" if self.tie is not None else "")


def _norm(value: Any) -> str:
    """A label as comparable text: ``1``, ``1.0`` and ``"1"`` all give ``"1"``."""
    if isinstance(value, bool):
        return str(value).lower()
    number = _number(value)
    if number is not None and number.is_integer():
        return str(int(number))
    return str(value).strip().lower()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def response_columns(columns: list[str]) -> tuple[str, str] | None:
    """The first pair of response columns present, e.g. ``('output_1', 'output_2')``."""
    return next(((a, b) for a, b in RESPONSE_PAIRS if a in columns and b in columns), None)


def label_columns(columns: list[str], spec: LabelSpec) -> tuple[str, ...]:
    """The label column(s): ``spec.column``, else ``label``, ``preference``, else the annotator columns."""
    if spec.column:
        return tuple(name.strip() for name in spec.column.split(",") if name.strip())
    found = next((name for name in LABEL_COLUMNS if name in columns), None)
    if found:
        return (found,)
    annotators = [name for name in columns if ANNOTATOR.match(name)]
    return tuple(sorted(annotators, key=lambda name: int(ANNOTATOR.match(name).group(1))))  # type: ignore[union-attr]


@dataclass(frozen=True)
class Layout:
    """The columns of a labelled dataset: prompt part(s), the two responses, the label(s)."""

    prompt: tuple[str, ...]
    responses: tuple[str, str]
    labels: tuple[str, ...]


def _prompt_columns(raw: RawRows) -> tuple[str, ...]:
    if "prompt" in raw.columns:
        return ("prompt",)
    if "instruction" in raw.columns:
        return ("instruction", "input") if "input" in raw.columns else ("instruction",)
    if "input" in raw.columns:
        return ("input",)
    raise missing_column(raw, "prompt", " (nor 'instruction' or 'input')")


def layout_of(raw: RawRows, spec: LabelSpec) -> Layout:
    """Find the columns of ``raw`` (see the module docstring); a one-line error for a missing one."""
    responses = response_columns(raw.columns)
    if responses is None:
        others = ", ".join(f"'{a}'" for a, _ in RESPONSE_PAIRS[1:])
        raise missing_column(raw, "response_1", f" (nor {others})", needed=("response_1", "response_2"))
    labels = label_columns(raw.columns, spec)
    if not labels:
        raise PreftuneError(
            f"{raw.name}: two responses ('{responses[0]}', '{responses[1]}') but no label column saying which is "
            f"better (looked for 'label', 'preference', 'annotatorN'); found {raw.columns}; set data.labels.column=NAME"
        )
    for name in labels:
        if name not in raw.columns:
            guess = closest(name, raw.columns)
            hint = f"; did you mean '{guess}'?" if guess else ""
            raise PreftuneError(
                f"{raw.name}: data.labels.column names '{name}', which is not a column; found {raw.columns}{hint}"
            )
    return Layout(_prompt_columns(raw), responses, labels)


class LabelledParser:
    """Turns labelled rows into pairs (see the module docstring), counting label outcomes in ``counts``."""

    def __init__(self, raw: RawRows, spec: LabelSpec) -> None:
        self.layout = layout_of(raw, spec)
        self.spec = spec
        self.counts: Counter[str] = Counter({key: 0 for key in LABEL_COUNTS[:3]})
        values = (spec.first, spec.second, spec.tie)
        self.targets = [(key, value) for key, value in zip(LABEL_COUNTS[:3], values, strict=True) if value is not None]
        self.range = (_number(spec.first), _number(spec.second))

    def __call__(self, row: dict[str, Any], origin: Origin) -> list[PreferenceExample]:
        outcome = self.outcome(row)
        if outcome == "tie":
            return []
        prompt = self.prompt(row)
        conversational = isinstance(prompt, list)
        first, second = self.layout.responses
        responses = [self.response(row, name, conversational) for name in (first, second)]
        if responses[0] == responses[1]:
            raise RowProblem(second, f"identical to {first}")
        chosen, rejected = responses if outcome == "first" else responses[::-1]
        return [PreferenceExample(prompt, chosen, rejected, origin)]

    def vote(self, value: Any, field: str) -> tuple[str, bool]:
        """(``first``/``second``/``tie``, whether the label was weighted) for one label value."""
        if value is None:
            raise RowProblem(field, "missing value (null)")
        number = _number(value)
        for outcome, target in self.targets:
            if _norm(value) == _norm(target) or (number is not None and number == _number(target)):
                return outcome, False
        low, high = self.range
        if number is not None and low is not None and high is not None and min(low, high) < number < max(low, high):
            gap = abs(number - low) - abs(number - high)
            return ("first" if gap < 0 else "second" if gap > 0 else "tie"), True
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:37]}..."
        meaning = self.spec.meaning(*self.layout.responses)
        raise RowProblem(field, "unrecognised label", f"got {shown} ({type_name(value)}); expected {meaning}")

    def outcome(self, row: dict[str, Any]) -> str:
        """The row's outcome: one label, or the majority of several (no majority: a tie); counted."""
        votes = [self.vote(row.get(name), name) for name in self.layout.labels]
        tally = Counter(outcome for outcome, _ in votes)
        winner, n = tally.most_common(1)[0]
        majority = 2 * n > len(votes)
        outcome = winner if majority else "tie"
        self.counts[outcome] += 1
        self.counts["weighted"] += any(weighted for _, weighted in votes)
        self.counts["not_unanimous"] += len(tally) > 1
        self.counts["no_majority"] += not majority
        return outcome

    def prompt(self, row: dict[str, Any]) -> Text:
        """``prompt``; or ``instruction`` and a non-empty ``input`` joined by a blank line."""
        names = self.layout.prompt
        value = row.get(names[0])
        if names == ("prompt",) and is_messages(value):
            prompt: Text = as_messages(value, "prompt")
            check_part(prompt, "prompt", True, response=False)
            return prompt
        parts = [as_text(row.get(name), name) for name in names if name == names[0] or row.get(name) is not None]
        text = "\n\n".join(part for part in parts if part.strip()) or parts[0]
        check_part(text, "/".join(names), False, response=False)
        return text

    def response(self, row: dict[str, Any], name: str, conversational: bool) -> Text:
        """One response, checked under its own column name (so that errors name the file's column)."""
        value: Text = as_messages(row.get(name), name) if conversational else as_text(row.get(name), name)
        check_part(value, name, conversational, response=True)
        return value

    def label_counts(self) -> dict[str, int]:
        """The outcome counts: ``first``, ``second``, ``tie`` always; the others where not zero."""
        return {key: self.counts[key] for key in LABEL_COUNTS if key in LABEL_COUNTS[:3] or self.counts[key]}


def refuse_reversible_mapping(raw: RawRows, columns: Mapping[str, str] | None, spec: LabelSpec) -> None:
    """Refuse ``data.columns`` mapping chosen/rejected onto two responses whose order a label column decides.

    With such a mapping every pair the label says the second response won would train reversed.
    """
    if not columns or "chosen" not in columns or "rejected" not in columns:
        return
    mapped = (columns["chosen"], columns["rejected"])
    if mapped not in RESPONSE_PAIRS and mapped[::-1] not in RESPONSE_PAIRS:
        return
    labels = [name for name in label_columns(raw.columns, spec) if name in raw.columns]
    if labels:
        raise PreftuneError(
            f"{raw.name}: data.columns maps chosen and rejected onto '{mapped[0]}' and '{mapped[1]}', but "
            f"'{labels[0]}' says which of them is better: drop data.columns.chosen/rejected to read them as "
            "labelled pairs (data.format=labelled), or set data.format=standard to keep the mapping"
        )
