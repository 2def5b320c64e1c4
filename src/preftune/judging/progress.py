"""Comparisons with a progress bar: :meth:`BothOrders.compare_many` in chunks, the bar counting them.

``judge eval``, ``win-rate`` and ``evaluate --generate`` ask a judge about hundreds of pairs in one
list; a local model takes minutes over it. With ``enabled``, the pairs go to the judge
:data:`CHUNK` at a time (more when the judge's batches are larger, so that each batch is still
full) and :class:`preftune.progress.StepProgress` counts the comparisons done, with the ETA (in a
log, not on a terminal, from :data:`~preftune.progress.QUIET_S` seconds on: a function judge prints
nothing). The
verdicts are the same as in one list: every comparison still asks both orders in one chunk, and a
verdict store still keeps each batch's answers as it returns.
"""

from __future__ import annotations

from collections.abc import Sequence

from preftune.judging.base import BothOrders, Verdict
from preftune.progress import QUIET_S, StepProgress

CHUNK = 16
"""Comparisons (two ordered calls each) per ``compare_many`` while a bar counts them."""


def compare_with_progress(
    both: BothOrders,
    items: Sequence[tuple[str, str, str]],
    *,
    enabled: bool = True,
    description: str = "judge",
) -> list[Verdict]:
    """``both.compare_many(items)``, with a bar over the comparisons (stderr) when ``enabled``."""
    if not enabled or not items:
        return both.compare_many(items)
    chunk = max(CHUNK, -(-(both.batch_size or 0) // 2))  # at least one of the judge's batches per chunk
    verdicts: list[Verdict] = []
    with StepProgress(len(items), description=description, unit="comparison", quiet_s=QUIET_S) as bar:
        for start in range(0, len(items), chunk):
            part = items[start : start + chunk]
            verdicts.extend(both.compare_many(part))
            for _ in part:
                bar.advance({})
    return verdicts
