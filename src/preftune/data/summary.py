"""What loading and tokenising did to a dataset, in a few printable lines or as JSON."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preftune.data.groups import TokenizedGroup
    from preftune.data.split import SplitSummary

NOT_USED = "not used (beyond data.train_size)"


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


def pair_lengths(pairs: Sequence[TokenizedGroup]) -> dict[str, LengthStats]:
    """Token-length statistics of tokenised pairs, by part: prompt, chosen, rejected, pair."""
    return {
        "prompt": LengthStats.of([len(p.prompt_ids) for p in pairs]),
        "chosen": LengthStats.of([len(p.chosen_ids) for p in pairs]),
        "rejected": LengthStats.of([len(p.rejected_ids) for p in pairs]),
        "pair": LengthStats.of([p.length for p in pairs]),
    }


def group_lengths(groups: Sequence[TokenizedGroup]) -> dict[str, LengthStats]:
    """Token-length statistics of tokenised groups: ``prompt``, ``response`` (every response of every
    group) and ``group`` (prompt + its longest response, the longest row the group needs)."""
    return {
        "prompt": LengthStats.of([len(g.prompt_ids) for g in groups]),
        "response": LengthStats.of([len(r) for g in groups for r in g.responses]),
        "group": LengthStats.of([g.length for g in groups]),
    }


def sizes_note(stage: str, sizes: list[int]) -> str:
    """``loaded: 99 groups, 412 completions (sizes: 3 x50, 5 x49)``; DataSummary says "pairs", so say "groups"."""
    counts = Counter(sizes)
    listed = ", ".join(f"{size} x{n}" for size, n in sorted(counts.items()))
    return f"{stage}: {len(sizes)} groups, {sum(sizes)} completions (sizes: {listed})"


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
        labels: for labelled pairs, the label outcomes of the rows read (``first``, ``second``,
            ``tie``, and ``weighted``, ``not_unanimous``, ``no_majority`` where not zero; see
            :mod:`preftune.data.labelled`); empty for other formats.
        split: how the held-out pairs were taken from these (:func:`preftune.data.split.hold_out`),
            or None.
        unit: what ``kept`` counts: ``pairs``, or ``groups`` of ranked completions.
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
    labels: dict[str, int] = field(default_factory=dict)
    split: SplitSummary | None = None
    unit: str = "pairs"

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
            labels=self.labels or later.labels,
            split=self.split or later.split,
        )

    def with_split(self, split: SplitSummary) -> DataSummary:
        """This summary carrying the hold-out's (``data_summary.json`` then says it)."""
        return replace(self, split=split)

    def limited(self, pairs: Sequence[TokenizedGroup]) -> DataSummary:
        """This summary of tokenised pairs, for only ``pairs``: the first of them, those really used.

        After ``data.train_size`` cuts the training pairs, the counts must describe what was
        trained on: ``kept``, the truncation counts and the lengths are recomputed from
        ``pairs``, and the pairs left out are counted under ``dropped["not used (beyond
        data.train_size)"]``.
        """
        if isinstance(pairs, int):
            raise TypeError("limited() takes the pairs used (e.g. train[:train_size]), not their number")
        if len(pairs) > self.kept:
            raise ValueError(f"limited: {len(pairs)} pairs, but the summary describes only {self.kept}")
        dropped = dict(self.dropped)
        if len(pairs) < self.kept:
            dropped[NOT_USED] = dropped.get(NOT_USED, 0) + self.kept - len(pairs)
        return replace(
            self,
            kept=len(pairs),
            dropped=dropped,
            truncated_prompts=sum(p.prompt_truncated for p in pairs),
            truncated_responses=sum(p.responses_truncated for p in pairs),
            lengths=pair_lengths(pairs) if self.lengths else {},
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = asdict(self)
        data["notes"] = list(self.notes)
        data["split"] = self.split.to_dict() if self.split is not None else None
        return data

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def __str__(self) -> str:
        head = f"{self.source} ({self.format}): {self.rows_read} rows read"
        lines = [f"{head}, {self.kept} {self.unit} kept, {self.num_dropped} dropped"]
        lines += [f"  dropped {n}: {reason}" for reason, n in self.dropped.items()]
        if self.truncated_prompts or self.truncated_responses:
            lines.append(
                f"  truncated: {self.truncated_prompts} prompts (from the left), {self.truncated_responses} responses"
            )
        if self.lengths:
            parts = ", ".join(f"{name} {stats}" for name, stats in self.lengths.items())
            lines.append(f"  tokens min/mean/median/max: {parts}")
        if self.labels:
            lines.append(f"  labels: {labels_line(self.labels)}")
        if self.split is not None:
            lines.append(f"  {self.split}")
        lines += [f"  {note}" for note in self.notes]
        return "\n".join(lines)


def labels_line(counts: dict[str, int]) -> str:
    """``368 first better, 426 second better, 85 ties (29 not unanimous, 4 without a majority)``."""
    first, second, ties = (counts.get(key, 0) for key in ("first", "second", "tie"))
    head = f"{first} first better, {second} second better, {ties} ties"
    words = {"weighted": "weighted", "not_unanimous": "not unanimous", "no_majority": "without a majority"}
    extra = ", ".join(f"{counts[key]} {word}" for key, word in words.items() if counts.get(key))
    return f"{head} ({extra})" if extra else head
