"""One stage of a run, offline or on-policy alike: LoRA, the reference, the trainer, the hooks, the
trackers, resuming, the Ctrl-C hint and the stage's outputs, written once.

The two kinds differ only in their *feed*: what the stage's ``fit`` reads, the reference that
suits it, the steps it sizes the schedule to, and any hook of its own. Offline, a
:class:`DatasetFeed` (the training data through the batch plan, the reference precomputed for
the steps' batches); on-policy, :class:`~preftune.run.online.OnPolicyFeed` (rounds sampled from
the policy as the fit goes). Either way the stage is one ``fit``, and resuming is
:meth:`~preftune.training.Trainer.restore` of the trainer, the source and the hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from accelerate import Accelerator
from rich.console import Console

from preftune.data import Batcher
from preftune.modeling import apply_lora
from preftune.objectives import Objective
from preftune.run.config import RunConfig, StageConfig
from preftune.run.inputs import Examples, Inputs, objective_for_inputs
from preftune.run.outputs import finish_stage
from preftune.run.references import live_reference, make_reference, reference_kind
from preftune.run.summary import flat_config
from preftune.training import (
    Callbacks,
    Checkpoints,
    DatasetSource,
    HeldOutEvaluation,
    Hook,
    Logging,
    OptimConfig,
    Progress,
    StepCallback,
    StopOnNonFinite,
    Trainer,
    TrainResult,
    gradient_cosine_hooks,
    latest_checkpoint,
    make_plan,
    responses_read,
)
from preftune.training.sharding import ShardingPlan, units, unsharded_copy


@dataclass
class RunParts:
    """What every stage of a run shares, built once by :func:`~preftune.run.train.run_training`."""

    config: RunConfig
    tokenizer: Any
    examples: Examples
    inputs: Inputs
    batcher: Batcher
    accelerator: Accelerator
    console: Console
    dirs: list[Path]  # each stage's folder
    callbacks: Sequence[StepCallback] = ()
    round_inputs: Any = None  # on-policy runs: labeller and prompts (run.online.RoundInputs), built before the model
    judges: Sequence[tuple[str, Any]] = ()  # eval.judges, built before the policy loaded
    sharding: ShardingPlan | None = None  # an FSDP launch's (training.sharding), None for DDP or one process

    def say(self, *args: Any, **kwargs: Any) -> None:
        """Print on the main process only."""
        if self.accelerator.is_main_process:
            self.console.print(*args, **kwargs)


class Feed(Protocol):
    """What a stage's ``fit`` reads, and what goes with it."""

    optim: OptimConfig
    objective: Any  # what the trainer runs: the stage's objective, or it over pairs within sampled groups
    total_steps: int
    train_reference: Any  # what the trainer's objective scores against (None if it needs none)
    eval_reference: Any  # the held-out pairs' reference

    def source(self, trainer: Trainer) -> Any: ...

    def hooks(self, stage_dir: Path, checkpoints: Checkpoints) -> list[Hook]: ...

    def record(self, stage_dir: Path) -> dict[str, Any]: ...


def stage_optim(config: RunConfig, stage: StageConfig) -> OptimConfig:
    """The run's optimiser settings with the stage's own ``lr``, ``epochs`` and ``max_steps``."""
    updates = {k: getattr(stage, k) for k in ("lr", "epochs", "max_steps") if getattr(stage, k) is not None}
    return replace(config.optim, **updates) if updates else config.optim


class DatasetFeed:
    """Offline: the training examples through the stage's batch plan, with the reference
    precomputed for just the examples the steps read, in the first epoch's own batches."""

    def __init__(self, parts: RunParts, stage: StageConfig, objective: Objective, model: Any) -> None:
        config, inputs, accelerator = parts.config, parts.inputs, parts.accelerator
        objective = objective_for_inputs(objective, inputs.train, config.data)  # ranked groups: pairs read within
        self.parts, self.optim, self.objective = parts, stage_optim(config, stage), objective
        t0 = time.perf_counter()
        self.plan = make_plan(inputs.train, self.optim, accelerator.num_processes, config.data.group_by_length)
        self.total_steps = self.plan.total_steps(self.optim.epochs, self.optim.max_steps)
        read, self.group_size = self.plan.indices_read(self.total_steps), responses_read(objective)
        kind = reference_kind(stage.reference, config.lora.enabled, needs=live_reference(config, objective))
        self.train_reference, self.eval_reference = make_reference(
            kind,
            objective,
            model,
            config,
            inputs.train,
            inputs.held_out,
            parts.batcher,
            accelerator,
            read,
            self.group_size,
            self.plan.first_reads(self.total_steps),
        )
        shown = stage.reference if kind == stage.reference else f"{stage.reference}: {kind}"
        parts.say(
            f"reference ({shown}): ready in {time.perf_counter() - t0:.1f} s "
            f"({len(read)} of {len(inputs.train)} training examples read by this stage)",
            highlight=False,
        )

    def source(self, trainer: Trainer) -> DatasetSource:
        accelerator = trainer.accelerator
        return DatasetSource(
            self.parts.inputs.train,
            self.parts.batcher,
            self.plan,
            self.total_steps,
            rank=accelerator.process_index,
            group_size=self.group_size,
            device=accelerator.device,
            mismatched=self.objective.needs_mismatched,
        )

    def hooks(self, stage_dir: Path, checkpoints: Checkpoints) -> list[Hook]:
        return []

    def record(self, stage_dir: Path) -> dict[str, Any]:
        return {}


def train_stage(parts: RunParts, index: int, stage: StageConfig, objective: Objective, model: Any) -> tuple[Any, dict]:
    """Train stage ``index`` from ``model`` (the earlier stage's result, or the loaded model): the
    trained model and the stage's record. ``objective``: the stage's, built by the run's checks."""
    config, accelerator = parts.config, parts.accelerator
    if config.lora.enabled:
        lora = config.lora
        model = apply_lora(
            model,
            rank=lora.rank,
            alpha=lora.alpha,
            dropout=lora.dropout,
            target_modules=lora.target_modules,
            last_layers=lora.last_layers,
        )
    parts.say(f"stage '{stage.name}': {objective.describe()}", highlight=False)
    if config.online.rounds:
        from preftune.run.online import OnPolicyFeed

        feed: Feed = OnPolicyFeed(parts, stage, objective, model)
    else:
        feed = DatasetFeed(parts, stage, objective, model)
    stage_dir = parts.dirs[index]
    trainer = Trainer(
        accelerator=accelerator,
        model=model,
        objective=feed.objective,
        optim=feed.optim,
        total_steps=feed.total_steps,
        reference=feed.train_reference,
        logit_chunk=config.logit_chunk,
        refresh=config.ref_refresh,
        sharding=parts.sharding,
    )
    if trainer.sharded:
        parts.say(
            f"FSDP: the policy sharded over {accelerator.num_processes} processes, in {len(units(model))} units "
            "(each decoder layer, and the rest)",
            highlight=False,
        )
    source = feed.source(trainer)
    hooks = stage_hooks(parts, stage_dir, feed)
    start_trackers(accelerator, config, stage)
    with resume_hint(stage_dir, f"stage '{stage.name}'", parts.say):
        saved = latest_checkpoint(stage_dir) if config.resume else None
        if saved is not None:
            parts.say(f"resuming from {saved}", highlight=False)
        so_far = trainer.restore(saved, source, hooks) if saved is not None else None
        result = trainer.fit(source, hooks=hooks, result=so_far)
    extra = feed.record(stage_dir)
    if trainer.sharded:  # the outputs, and what follows the run, read a plain module
        model = unsharded_copy(model)
    record = _finish(parts, index, stage, result, model, extra.get("rounds", ())) | extra
    parts.say(f"stage '{stage.name}': {result.steps} steps in {result.seconds:.0f} s; model in {record['model']}")
    return model, record


def stage_hooks(parts: RunParts, stage_dir: Path, feed: Feed) -> list[Hook]:
    """Every stage's hooks, in order: the non-finite guard, logging, the progress bar, held-out
    evaluation, win rates, gradient cosines, the feed's own (an on-policy round's log and checkpoint),
    checkpoints, user callbacks."""
    config, inputs = parts.config, parts.inputs
    checkpoints = Checkpoints(stage_dir, config.save_every, config.keep_checkpoints, feed.total_steps)
    return [
        StopOnNonFinite(feed.optim.max_bad_steps, checkpoints),
        Logging(),
        Progress(parts.console),
        HeldOutEvaluation(inputs.held_out, feed.eval_reference, parts.batcher, config.eval, parts.console),
        *_win_rates(parts, stage_dir),
        *gradient_cosine_hooks(inputs.held_out, parts.batcher, config.eval, parts.console),
        *feed.hooks(stage_dir, checkpoints),  # after every record of the step, so its checkpoints hold them
        checkpoints,
        Callbacks(parts.callbacks),
    ]


def _win_rates(parts: RunParts, stage_dir: Path) -> list[Hook]:
    """The stage's periodic win rates (:mod:`preftune.training.win_rates`), none without ``eval.judges``."""
    if not parts.judges:
        return []
    from preftune.training.win_rates import WinRateEvaluation

    config = parts.config
    return [
        WinRateEvaluation(
            parts.inputs.held_out_examples,
            parts.tokenizer,
            parts.judges,
            config.eval,
            Path(config.output_dir),
            stage_dir,
            parts.console,
        )
    ]


def _finish(
    parts: RunParts, index: int, stage: StageConfig, result: TrainResult, model: Any, rounds: Sequence[dict]
) -> dict[str, Any]:
    """The stage's outputs; a later LoRA stage's adapter sits on the earlier stage's merged weights."""
    config, dirs = parts.config, parts.dirs
    base_dir = dirs[index - 1] / "merged" if index > 0 and config.lora.enabled else None
    return finish_stage(
        stage,
        dirs[index],
        result,
        model,
        parts.tokenizer,
        config,
        parts.accelerator,
        base_dir=base_dir,
        later_stage=index + 1 < len(dirs),
        rounds=rounds,
    )


def start_trackers(accelerator: Accelerator, config: RunConfig, stage: StageConfig) -> None:
    """A tracker run per stage (main process): the earlier stage's is closed, or it would get this
    stage's logs too."""
    if not accelerator.is_main_process:
        return
    for tracker in accelerator.trackers:
        tracker.finish()
    accelerator.trackers = []
    accelerator.init_trackers(stage.name, config=flat_config(config, stage))


@contextmanager
def resume_hint(stage_dir: Path, what: str, say: Callable[..., Any]) -> Iterator[None]:
    """On Ctrl-C inside the block, say which checkpoint ``--resume`` continues from (or that there
    is none yet), then let the interrupt go on."""
    try:
        yield
    except KeyboardInterrupt:
        saved = latest_checkpoint(stage_dir)
        where = f"--resume continues from {saved}" if saved else "no checkpoint was written yet: --resume has none"
        say(f"\ninterrupted in {what}; {where}", highlight=False)
        raise
