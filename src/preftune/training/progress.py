"""A progress bar with ETA and the latest loss, accuracy and margin, on the main process only."""

from __future__ import annotations

from types import TracebackType

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class StepProgress:
    """``with StepProgress(total, start): ... progress.advance(stats)``."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, description: str = "training") -> None:
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            disable=not enabled,
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
        shown = [f"loss {stats['loss']:.4f}"]
        for key, label in (("accuracy", "acc"), ("margin", "margin"), ("tokens_per_s", "tok/s")):
            if key in stats:
                shown.append(f"{label} {stats[key]:.3g}")
        self._progress.update(self._task, advance=1, info=" ".join(shown))
