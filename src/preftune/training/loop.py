"""The training loop: token batches -> log-prob records -> objective -> optimiser step.

The loop never asks which objective it runs: it builds the record the objective says it needs
(per-token log-probs or not, a reference or not), calls it, and minimises ``loss.mean()``.
Each optimiser step reads the pairs :class:`~preftune.training.plan.BatchPlan` assigns it, so
a resumed run continues exactly where a checkpoint left it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object
from rich.console import Console
from torch import nn
from transformers import get_scheduler

from preftune.data import Batch, Batcher, TokenizedPair
from preftune.errors import PreftuneError
from preftune.evaluation.statistical import MetricSummary, pair_values, summarise
from preftune.modeling import sequence_logprobs
from preftune.objectives import Objective, PairRecord, SequenceLogProbs
from preftune.training.checkpoint import checkpoint_dir, latest_checkpoint, load_checkpoint, save_checkpoint
from preftune.training.config import EvalConfig, OptimConfig
from preftune.training.plan import BatchPlan
from preftune.training.progress import StepProgress

ReferenceFn = Callable[[Batch], tuple[SequenceLogProbs, SequenceLogProbs | None]]
StepCallback = Callable[[int, dict[str, float]], None]


class PolicyLogProbs(nn.Module):
    """The policy as one module whose forward gives log-prob records.

    Wrapping :func:`sequence_logprobs` in a module lets DDP see one forward per micro-batch
    (it syncs gradients of what that forward touched), though the LM head is applied by hand.
    """

    def __init__(self, model: nn.Module, chunk_size: int) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, batch: Batch, with_tokens: bool = False) -> tuple[SequenceLogProbs, SequenceLogProbs | None]:
        return sequence_logprobs(self.model, batch, with_tokens=with_tokens, chunk_size=self.chunk_size)


@dataclass
class TrainResult:
    """What a finished (or stopped) stage reports."""

    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    skipped_steps: int = 0


class Trainer:
    """Trains one stage. Parts are built by the caller (see :mod:`preftune.training.run`)."""

    def __init__(
        self,
        *,
        accelerator: Accelerator,
        model: nn.Module,
        objective: Objective,
        train_pairs: Sequence[TokenizedPair],
        eval_pairs: Sequence[TokenizedPair],
        train_reference: ReferenceFn | None,
        eval_reference: ReferenceFn | None,
        batcher: Batcher,
        optim: OptimConfig,
        eval_config: EvalConfig,
        output_dir: Path,
        save_every: int,
        keep_checkpoints: int = 2,
        logit_chunk: int = 1024,
        group_by_length: bool = False,
        callbacks: Sequence[StepCallback] = (),
        console: Console | None = None,
    ) -> None:
        if objective.needs_reference and train_reference is None:
            raise PreftuneError(f"objective '{objective}' needs a reference model, and none was set up")
        self.accelerator = accelerator
        self.objective = objective
        self.train_pairs, self.eval_pairs = list(train_pairs), list(eval_pairs)
        self.train_reference, self.eval_reference = train_reference, eval_reference
        self.batcher = batcher
        self.optim, self.eval_config = optim, eval_config
        self.output_dir = Path(output_dir)
        self.save_every, self.keep = save_every, keep_checkpoints
        self.callbacks = list(callbacks)
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.plan = make_plan(self.train_pairs, optim, accelerator.num_processes, group_by_length)
        self.total_steps = self.plan.total_steps(optim.epochs, optim.max_steps)
        self.model = model
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise PreftuneError("the model has no trainable parameters")
        optimizer = make_optimizer(trainable, optim)
        self.scheduler = get_scheduler(
            optim.schedule,
            optimizer,
            num_warmup_steps=math.ceil(optim.warmup_ratio * self.total_steps),
            num_training_steps=self.total_steps,
        )
        self.policy, self.optimizer = accelerator.prepare(PolicyLogProbs(model, logit_chunk), optimizer)
        beta, average = objective.margin_settings()
        self.metric_beta, self.metric_average = beta, average

    # --- one step -------------------------------------------------------------------------------

    def _batch(self, indices: torch.Tensor) -> Batch:
        pairs = [self.train_pairs[i] for i in indices.tolist()]
        return self.batcher(pairs, indices).to(self.accelerator.device)

    def _record(self, batch: Batch, reference: ReferenceFn | None, with_tokens: bool) -> PairRecord:
        with self.accelerator.autocast():
            chosen, rejected = self.policy(batch, with_tokens=with_tokens)
        ref_chosen = ref_rejected = None
        if reference is not None:
            with torch.no_grad(), self.accelerator.autocast():
                ref_chosen, ref_rejected = reference(batch)
        return PairRecord(chosen, rejected, ref_chosen, ref_rejected)

    def _train_step(self, step: int) -> dict[str, float]:
        micro = self.plan.micro_batches(step, self.accelerator.process_index)
        sums: dict[str, float] = {}
        tokens = 0
        finite = True
        for i, indices in enumerate(micro):
            batch = self._batch(indices)
            tokens += batch.num_tokens
            sync = i == len(micro) - 1
            context = nullcontext() if sync else self.accelerator.no_sync(self.policy)
            with context:
                record = self._record(batch, self.train_reference, self.objective.needs_token_logps)
                out = self.objective(record)
                loss = out.loss.mean()
                finite = finite and bool(torch.isfinite(loss))
                self.accelerator.backward(loss / len(micro))
            for name, value in {"loss": out.loss, **{f"loss/{k}": v for k, v in out.terms.items()}}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach().float().mean()) / len(micro)
            for name, value in out.metrics.items():
                sums[name] = sums.get(name, 0.0) + float(value.float().mean()) / len(micro)
        grad_norm = self.accelerator.clip_grad_norm_(self.policy.parameters(), self.optim.max_grad_norm)
        # Gradients are identical on every process after the all-reduce, so is this decision.
        grad_norm = float(grad_norm) if grad_norm is not None else float("nan")
        finite = finite and math.isfinite(grad_norm)
        reduced = self.accelerator.reduce(torch.tensor(list(sums.values()), device=self.accelerator.device), "mean")
        stats = dict(zip(sums, reduced.tolist(), strict=True))
        # A loss that is non-finite on one process only (its gradient may be finite) makes the
        # reduced mean non-finite on all, so every process skips the step together.
        finite = finite and math.isfinite(stats["loss"])
        stats.update(grad_norm=grad_norm, lr=self.scheduler.get_last_lr()[0])
        stats["tokens"] = float(self.accelerator.reduce(torch.tensor(tokens, device=self.accelerator.device), "sum"))
        if finite:
            self.optimizer.step()
            self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        stats["skipped"] = 0.0 if finite else 1.0
        return stats

    # --- evaluation -----------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, initial: bool = False) -> dict[str, MetricSummary]:
        """Statistics of METHODS.md §6 on the held-out pairs, with standard errors.

        ``initial``: the policy is still its reference (LoRA adapters start at zero, a frozen
        copy is a copy), so one reference pass scores it: no second forward.
        """
        if not self.eval_pairs:
            return {}
        mine = torch.arange(len(self.eval_pairs)).tensor_split(self.accelerator.num_processes)[
            self.accelerator.process_index
        ]
        was_training = self.policy.training
        self.policy.eval()

        def policy(batch: Batch) -> tuple[SequenceLogProbs, SequenceLogProbs | None]:
            with self.accelerator.autocast():
                return self.policy(batch)

        reference = self.eval_reference
        scorer = reference if initial and reference is not None else policy
        per_pair = pair_values(
            scorer, reference, self.eval_pairs, mine, self.batcher, self.eval_config.batch_size,
            self.accelerator.device, self.metric_beta, self.metric_average,
        )  # fmt: skip
        self.policy.train(was_training)
        merged: dict[str, list[float]] = {}
        for part in gather_object([per_pair]):
            for name, values in part.items():
                merged.setdefault(name, []).extend(values)
        return summarise({k: torch.tensor(v) for k, v in merged.items()})

    # --- the loop -------------------------------------------------------------------------------

    def _state(self, step: int, result: TrainResult) -> dict[str, Any]:
        return {"step": step, "total_steps": self.total_steps, "history": result.history, "evals": result.evals}

    def _save(self, step: int, result: TrainResult) -> None:
        if self.accelerator.is_main_process:
            save_checkpoint(
                self.output_dir,
                step,
                self.accelerator.unwrap_model(self.policy),
                self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer,
                self.scheduler,
                self._state(step, result),
                self.keep,
            )
        self.accelerator.wait_for_everyone()

    def _log_eval(self, step: int, result: TrainResult, initial: bool = False) -> dict[str, MetricSummary]:
        summary = self.evaluate(initial=initial)
        if summary:
            result.evals.append({"step": step, **{k: v.to_dict() for k, v in summary.items()}})
            self.accelerator.log({f"eval/{k}": v.mean for k, v in summary.items()}, step=step)
            if self.accelerator.is_main_process:
                shown = ", ".join(f"{k} {summary[k]}" for k in ("accuracy", "margin", "chosen_drift") if k in summary)
                self.console.print(f"held-out at step {step}/{self.total_steps}: {shown}", highlight=False)
        return summary

    def train(self, resume: bool = False) -> TrainResult:
        """Run to ``total_steps``; with ``resume``, continue from the newest checkpoint."""
        result = TrainResult(steps=0)
        start = 0
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is not None and not resume:
            raise PreftuneError(
                f"{self.output_dir} holds checkpoints of an earlier run: resume it with --resume, "
                "or choose another output_dir"
            )
        if resume and checkpoint is not None:
            state = load_checkpoint(
                checkpoint,
                self.accelerator.unwrap_model(self.policy),
                getattr(self.optimizer, "optimizer", self.optimizer),
                self.scheduler,
            )
            start = int(state["step"])
            result.history, result.evals = list(state["history"]), list(state["evals"])
        if start == 0:
            self._log_eval(0, result, initial=True)
        self.policy.train()
        bad_streak = 0
        began = time.perf_counter()
        progress = StepProgress(self.total_steps, start, enabled=self.accelerator.is_main_process, console=self.console)
        with progress:
            for step in range(start, self.total_steps):
                t0 = time.perf_counter()
                stats = self._train_step(step)
                stats["tokens_per_s"] = stats.pop("tokens") / max(time.perf_counter() - t0, 1e-9)
                stats["step"] = step + 1
                result.history.append(stats)
                if stats["skipped"]:
                    result.skipped_steps += 1
                    bad_streak += 1
                    warnings.warn(f"step {step + 1}: non-finite loss or gradient; the step was skipped", stacklevel=1)
                    if bad_streak >= self.optim.max_bad_steps:
                        # Skipped steps change nothing, so the weights are the last good ones; the checkpoint
                        # is of this step, with its history, so a resumed run goes on with the next step.
                        self._save(step + 1, result)
                        raise PreftuneError(
                            f"{bad_streak} non-finite steps in a row at step {step + 1}: stopped; the last good "
                            f"weights are in {checkpoint_dir(self.output_dir, step + 1)} (lower optim.lr or check "
                            "the data, then --resume)"
                        )
                else:
                    bad_streak = 0
                self.accelerator.log({f"train/{k}": v for k, v in stats.items() if k != "step"}, step=step + 1)
                progress.advance(stats)
                done = step + 1
                if self.eval_config.every and done % self.eval_config.every == 0 and done < self.total_steps:
                    self._log_eval(done, result)
                if done % self.save_every == 0 or done == self.total_steps:
                    self._save(done, result)
                for callback in self.callbacks:
                    callback(done, stats)
        self._log_eval(self.total_steps, result)
        result.steps = self.total_steps
        result.seconds = time.perf_counter() - began
        return result


def make_plan(pairs: Sequence[TokenizedPair], optim: OptimConfig, processes: int, group_by_length: bool) -> BatchPlan:
    """The batch plan of a stage: which pairs each step reads (the trainer's, and the reference's to precompute)."""
    lengths = tuple(p.length for p in pairs) if group_by_length else None
    return BatchPlan(len(pairs), optim.batch_size, optim.seed, processes, optim.grad_accumulation, lengths)


def make_optimizer(parameters: list[nn.Parameter], optim: OptimConfig) -> torch.optim.Optimizer:
    """AdamW; the fused kernel where torch has one for the parameters' device (CPU and CUDA in
    torch ≥ 2.4: one pass over each tensor instead of a dozen elementwise ones)."""
    try:
        return torch.optim.AdamW(parameters, lr=optim.lr, weight_decay=optim.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # a device or dtype without a fused kernel
        return torch.optim.AdamW(parameters, lr=optim.lr, weight_decay=optim.weight_decay)
