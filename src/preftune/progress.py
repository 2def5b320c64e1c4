"""The one progress bar: a count with ETA and the latest loss, accuracy and margin (stderr).

On a terminal: a live bar. Elsewhere (a log file, CI): one line about every 5% of the run,
so a long run's log still tells how far it got and how long is left::

    judge eval: pair 40/100  elapsed 31s  ETA 46s

A leaf like :mod:`preftune.errors`: training, generation, judging, evaluation, reward models and
the commands all count with :class:`StepProgress` (``with StepProgress(total, description=...,
unit=...) as bar: ... bar.advance({})``), on the main process only.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

QUIET_S = 3.0
"""The commands' bars (judging, sampling, scoring) print no log line before this many seconds."""


def describe(stats: dict[str, float]) -> str:
    shown = [f"loss {stats['loss']:.4f}"] if "loss" in stats else []
    for key, label in (("accuracy", "acc"), ("margin", "margin"), ("tokens_per_s", "tok/s")):
        if key in stats:
            shown.append(f"{label} {stats[key]:.3g}")
    return " ".join(shown)


class StepProgress:
    """``with StepProgress(total, start): ... progress.advance(stats)``.

    ``unit`` names what one ``advance`` counts in the log lines (``judge eval: pair 40/100``);
    without it a line says ``step`` (training) or ``batch``. ``quiet_s``: no log line before that
    many seconds (a run that ends sooner prints none; the live bar is not held back).
    ``enabled=False`` shows nothing.
    """

    def __init__(
        self,
        total: int,
        start: int = 0,
        enabled: bool = True,
        description: str = "training",
        console: Console | None = None,
        unit: str | None = None,
        quiet_s: float = 0.0,
    ) -> None:
        self.total, self.done, self.start = total, start, start
        self.enabled = enabled
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.description = description
        self.unit = unit  # what one advance counts in the log lines ("pair"); default: step / batch
        self.quiet_s = quiet_s  # log lines only once this long has passed: a quick run prints none
        self.printed = False
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
            if elapsed < self.quiet_s and not (self.printed and self.done == self.total):
                return
            eta = elapsed / (self.done - self.start) * (self.total - self.done)
            if self.unit is not None:
                unit = f"{self.description}: {self.unit} "
            else:
                unit = "step " if self.description == "training" else f"{self.description}: batch "
            parts = [f"{unit}{self.done}/{self.total}", info, f"elapsed {elapsed:.0f}s", f"ETA {eta:.0f}s"]
            print("  ".join(part for part in parts if part), file=sys.stderr)
            self.printed = True
