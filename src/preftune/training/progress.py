"""Progress with ETA and the latest loss, accuracy and margin, on the main process only.

On a terminal: a live bar. Elsewhere (a log file, CI): one line about every 5% of the run,
so a long run's log still tells how far it got and how long is left.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def describe(stats: dict[str, float]) -> str:
    shown = [f"loss {stats['loss']:.4f}"] if "loss" in stats else []
    for key, label in (("accuracy", "acc"), ("margin", "margin"), ("tokens_per_s", "tok/s")):
        if key in stats:
            shown.append(f"{label} {stats[key]:.3g}")
    return " ".join(shown)


class StepProgress:
    """``with StepProgress(total, start): ... progress.advance(stats)``."""

    def __init__(
        self,
        total: int,
        start: int = 0,
        enabled: bool = True,
        description: str = "training",
        console: Console | None = None,
    ) -> None:
        self.total, self.done, self.start = total, start, start
        self.enabled = enabled
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.description = description
        self.live = enabled and self.console.is_terminal
        self.every = max(1, total // 20)
        self.began = time.perf_counter()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self.console,
            disable=not self.live,
        )
        self._task = self._progress.add_task(description, total=total, completed=start, info="")

    def __enter__(self) -> StepProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.__exit__(kind, value, trace)

    def advance(self, stats: dict[str, float]) -> None:
        self.done += 1
        info = describe(stats)
        self._progress.update(self._task, advance=1, info=info)
        if self.enabled and not self.live and (self.done % self.every == 0 or self.done == self.total):
            elapsed = time.perf_counter() - self.began
            eta = elapsed / (self.done - self.start) * (self.total - self.done)
            unit = "step " if self.description == "training" else f"{self.description}: batch "
            print(f"{unit}{self.done}/{self.total}  {info}  elapsed {elapsed:.0f}s  ETA {eta:.0f}s", file=sys.stderr)
