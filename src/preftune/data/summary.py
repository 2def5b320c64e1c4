"""What loading and tokenising did to a dataset, in a few printable lines or as JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class LengthStats:
    """Token counts over a set of sequences."""

    min: int
    mean: float
    median: float
    max: int

    @classmethod
    def of(cls, lengths: list[int]) -> LengthStats:
        if not lengths:
            return cls(0, 0.0, 0.0, 0)
        return cls(min(lengths), statistics.fmean(lengths), statistics.median(lengths), max(lengths))

    def __str__(self) -> str:
        return f"{self.min}/{self.mean:.1f}/{self.median:g}/{self.max}"


@dataclass(frozen=True)
class DataSummary:
    """Counts from loading (and tokenising) one dataset.

    Attributes:
        source: the file or dataset name.
        format: the data format read (``"standard"``, ``"implicit"``...).
        rows_read: rows in the source (a ranked row may give several pairs, so ``kept`` can exceed it).
        kept: examples (pairs) kept.
        dropped: examples or rows dropped, by reason (``skip_invalid``, pairs with no pair, truncation).
        truncated_prompts: pairs whose prompt was cut from the left.
        truncated_responses: responses (chosen or rejected, counted apart) cut from the right.
        lengths: token-length statistics after truncation, by part: ``prompt``, ``chosen``,
            ``rejected``, ``pair`` (prompt + longer response); empty before tokenisation.
        notes: anything else worth a line (e.g. how unpaired sets were cycled).
    """

    source: str
    format: str
    rows_read: int
    kept: int
    dropped: dict[str, int] = field(default_factory=dict)
    truncated_prompts: int = 0
    truncated_responses: int = 0
    lengths: dict[str, LengthStats] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def num_dropped(self) -> int:
        return sum(self.dropped.values())

    def followed_by(self, later: DataSummary) -> DataSummary:
        """This summary continued by a later stage's (e.g. tokenisation after loading)."""
        dropped = dict(self.dropped)
        for reason, n in later.dropped.items():
            dropped[reason] = dropped.get(reason, 0) + n
        return replace(
            later,
            source=self.source,
            format=self.format,
            rows_read=self.rows_read,
            dropped=dropped,
            notes=self.notes + later.notes,
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        return data

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def __str__(self) -> str:
        head = f"{self.source} ({self.format}): {self.rows_read} rows read"
        lines = [f"{head}, {self.kept} pairs kept, {self.num_dropped} dropped"]
        lines += [f"  dropped {n}: {reason}" for reason, n in self.dropped.items()]
        if self.truncated_prompts or self.truncated_responses:
            lines.append(
                f"  truncated: {self.truncated_prompts} prompts (from the left), {self.truncated_responses} responses"
            )
        if self.lengths:
            parts = ", ".join(f"{name} {stats}" for name, stats in self.lengths.items())
            lines.append(f"  tokens min/mean/median/max: {parts}")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)
