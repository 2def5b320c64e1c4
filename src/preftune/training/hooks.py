"""What happens around the steps of :meth:`preftune.training.loop.Trainer.fit`: evaluation,
checkpoints, progress, logging, the non-finite guard and user callbacks, each a hook.

A hook sees a :class:`Fit` (the trainer, the source, the result so far) at the start of a fit,
after every step (with the step's statistics) and at its end; ``close`` runs in any case
(an exception included), for what must be torn down. Hooks run in the order given.

A hook with a ``name`` keeps state a resumed run needs (its records, a baseline): its
``state_dict()`` goes into every checkpoint under that name and ``load_state_dict`` gives it
back, so the engine saves and restores hooks without knowing any of them. What a
:class:`RecordingHook` records reaches the fit's result as ``result.records[name]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from accelerate.utils import gather_object
from rich.console import Console

from preftune.data import Batch, Batcher, TokenizedGroup
from preftune.errors import PreftuneError
from preftune.evaluation.names import CONSOLE_METRICS
from preftune.evaluation.statistical import MetricSummary, pair_values, summarise
from preftune.progress import StepProgress
from preftune.training.checkpoint import checkpoint_dir
from preftune.training.settings import EvalConfig

if TYPE_CHECKING:
    from preftune.training.sources import BatchSource

StepCallback = Callable[[int, dict[str, float]], None]


@dataclass
class TrainResult:
    """What a finished (or stopped) fit reports: steps done, per-step statistics, and each
    recording hook's records by the hook's name (``evals``: :class:`HeldOutEvaluation`'s)."""

    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    skipped_steps: int = 0
    records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def evals(self) -> list[dict[str, Any]]:
        """The held-out evaluations (start, periodic, end)."""
        return self.records.get(HeldOutEvaluation.name, [])


@dataclass
class Fit:
    """One call of ``fit``: what hooks read and write."""

    trainer: Any  # the Trainer running the fit (the loop imports this module, not the other way round)
    source: BatchSource
    result: TrainResult
    end_step: int  # the global step this fit stops at
    hooks: Sequence[Hook] = ()

    def hook_states(self) -> dict[str, Any]:
        """Every named hook's state, by name (what a checkpoint keeps of the hooks)."""
        return {hook.name: hook.state_dict() for hook in self.hooks if hook.name}

    def collect_records(self) -> None:
        """The recording hooks' records into the result, by hook name."""
        for hook in self.hooks:
            if isinstance(hook, RecordingHook):
                self.result.records[hook.name] = list(hook.records)


class Hook:
    """A no-op hook; subclasses override what they need. ``name``: set by a hook with state to keep."""

    name = ""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs of this hook (JSON)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back :meth:`state_dict`'s value from a checkpoint."""

    def start(self, fit: Fit) -> None:
        """Before the first step."""

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        """After every step (``fit.trainer.global_step`` is the step just done)."""

    def end(self, fit: Fit) -> None:
        """After the last step, when the fit was not stopped."""

    def close(self, fit: Fit) -> None:
        """Always, last: tear down what ``start`` set up."""


class RecordingHook(Hook):
    """A hook that keeps a list of records (evaluations...), saved in checkpoints and handed to the
    fit's result under its ``name``."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"records": self.records}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.records = list(state.get("records", []))


class Logging(Hook):
    """Each step's statistics to the accelerator's trackers (``train/...``)."""

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        step = fit.trainer.global_step
        fit.trainer.accelerator.log({f"train/{k}": v for k, v in stats.items() if k != "step"}, step=step)


class Progress(Hook):
    """A progress bar with ETA over the fit's steps (main process only)."""

    def __init__(self, console: Console | None = None) -> None:
        self.console, self.bar = console, None

    def start(self, fit: Fit) -> None:
        trainer = fit.trainer
        self.bar = StepProgress(
            fit.end_step, trainer.global_step, enabled=trainer.accelerator.is_main_process, console=self.console
        )
        self.bar.__enter__()

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        assert self.bar is not None
        self.bar.advance(stats)

    def close(self, fit: Fit) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


class Checkpoints(Hook):
    """A checkpoint every ``every`` steps and at the last step of the run (``total_steps``)."""

    def __init__(self, output_dir: Path, every: int, keep: int, total_steps: int) -> None:
        self.output_dir, self.every, self.keep, self.total_steps = Path(output_dir), every, keep, total_steps
        self.saved_step: int | None = None  # the step of the last checkpoint written

    def save(self, fit: Fit) -> None:
        state = {"total_steps": self.total_steps, "history": fit.result.history, "hooks": fit.hook_states()}
        fit.trainer.save(self.output_dir, state, fit.source.state_dict(), self.keep)
        self.saved_step = fit.trainer.global_step

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        done = fit.trainer.global_step
        if done != self.saved_step and (done % self.every == 0 or done == self.total_steps):
            self.save(fit)


class StopOnNonFinite(Hook):
    """Warn at a skipped step; after ``limit`` in a row, save a checkpoint and stop the run."""

    def __init__(self, limit: int, checkpoints: Checkpoints) -> None:
        self.limit, self.checkpoints, self.streak = limit, checkpoints, 0

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        step = fit.trainer.global_step
        if not stats["skipped"]:
            self.streak = 0
            return
        fit.result.skipped_steps += 1
        self.streak += 1
        warnings.warn(f"step {step}: non-finite loss or gradient; the step was skipped", stacklevel=1)
        if self.streak >= self.limit:
            # Skipped steps change nothing, so the weights are the last good ones; the checkpoint is of this
            # step, with its history, so a resumed run goes on with the next step.
            self.checkpoints.save(fit)
            raise PreftuneError(
                f"{self.streak} non-finite steps in a row at step {step}: stopped; the last good weights are in "
                f"{checkpoint_dir(self.checkpoints.output_dir, step)} (lower optim.lr or check the data, then --resume)"
            )


class Callbacks(Hook):
    """User callbacks ``callback(step, stats)`` after every step."""

    def __init__(self, callbacks: Sequence[StepCallback]) -> None:
        self.callbacks = list(callbacks)

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        for callback in self.callbacks:
            callback(fit.trainer.global_step, stats)


class HeldOutEvaluation(RecordingHook):
    """docs/methods.md §6 statistics on held-out pairs, with standard errors: before the first step,
    every ``config.every`` steps and at the end; shared over the processes."""

    name = "evals"

    def __init__(
        self,
        pairs: Sequence[TokenizedGroup],
        reference: Any,
        batcher: Batcher,
        config: EvalConfig,
        console: Console | None = None,
    ) -> None:
        super().__init__()
        self.pairs, self.reference, self.batcher, self.config = list(pairs), reference, batcher, config
        self.console = console or Console(stderr=True, soft_wrap=True)

    def start(self, fit: Fit) -> None:
        if fit.trainer.global_step == 0:
            self.log(fit, initial=True)

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        done = fit.trainer.global_step
        if self.config.every and done % self.config.every == 0 and done < fit.end_step:
            self.log(fit)

    def end(self, fit: Fit) -> None:
        self.log(fit)

    def log(self, fit: Fit, initial: bool = False) -> dict[str, MetricSummary]:
        trainer = fit.trainer
        summary = self.evaluate(trainer, initial)
        if summary:
            step = trainer.global_step
            self.records.append({"step": step, **{k: v.to_dict() for k, v in summary.items()}})
            trainer.accelerator.log({f"eval/{k}": v.mean for k, v in summary.items()}, step=step)
            if trainer.accelerator.is_main_process:
                shown = ", ".join(f"{k} {summary[k]}" for k in CONSOLE_METRICS if k in summary)
                self.console.print(f"held-out at step {step}/{trainer.total_steps}: {shown}", highlight=False)
        return summary

    @torch.no_grad()
    def evaluate(self, trainer: Any, initial: bool = False) -> dict[str, MetricSummary]:
        """``initial``: the policy is still its reference (LoRA adapters start at zero, a frozen
        copy is a copy), so one reference pass scores it: no second forward."""
        if not self.pairs:
            return {}
        accelerator = trainer.accelerator
        mine = torch.arange(len(self.pairs)).tensor_split(accelerator.num_processes)[accelerator.process_index]
        beta, average = trainer.objective.margin_settings()

        def policy(batch: Batch):
            return trainer.pair_logprobs(batch)

        scorer = self.reference if initial and self.reference is not None else policy
        with trainer.whole_parameters(), trainer.eval_mode():
            per_pair = pair_values(
                scorer,
                self.reference,
                self.pairs,
                mine,
                self.batcher,
                self.config.batch_size,
                accelerator.device,
                beta,
                average,
            )
        merged: dict[str, list[float]] = {}
        for part in gather_object([per_pair]):
            for name, values in part.items():
                merged.setdefault(name, []).extend(values)
        return summarise({k: torch.tensor(v) for k, v in merged.items()})
