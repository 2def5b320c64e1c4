"""The progress bar of training runs: :class:`preftune.progress.StepProgress`, a leaf every package uses."""

from preftune.progress import StepProgress, describe

__all__ = ["StepProgress", "describe"]
