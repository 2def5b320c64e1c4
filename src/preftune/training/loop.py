"""The trainer: micro-batches -> log-prob records -> objective -> optimiser step (P3's unified loop).

Built once per run, it owns the policy (wrapped for DDP once), the optimizer and the LR schedule
(sized to the run's ``total_steps``, so a second round continues the same moments and schedule).
``step(micro_batches)`` is one optimiser step; ``fit(source, steps, hooks)`` reads steps from a
batch source (:mod:`preftune.training.sources`: a dataset offline, a buffer of samples on-policy)
and runs the hooks (:mod:`preftune.training.hooks`: evaluation, checkpoints, progress, logging).

The trainer never asks which objective it runs: it builds the record the objective declares
(pairs or groups, per-token log-probs or not, a reference or not), calls it, and minimises
``loss.mean()``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch import nn

from preftune.data import Batch
from preftune.errors import PreftuneError
from preftune.modeling import as_pair, response_logprobs
from preftune.objectives import GroupRecord, Objective, SequenceLogProbs, record_for
from preftune.training.checkpoint import REFERENCE_FILE, load_checkpoint, save_checkpoint
from preftune.training.hooks import Fit, Hook, StepCallback, TrainResult
from preftune.training.mismatched import mismatched_log_ratio
from preftune.training.plan import BatchPlan
from preftune.training.settings import OptimConfig, RefreshConfig
from preftune.training.sharding import (
    ShardingPlan,
    load_optimizer_state,
    optimizer_state,
    shard,
    whole_norm,
    whole_parameters,
)
from preftune.training.sources import BatchSource

__all__ = ["PolicyLogProbs", "StepCallback", "TrainResult", "Trainer", "make_optimizer", "make_plan", "responses_read"]


class PolicyLogProbs(nn.Module):
    """The policy as one module whose forward gives ``[B, C]`` log-prob records.

    Wrapping :func:`response_logprobs` in a module lets DDP see one forward per micro-batch
    (it syncs gradients of what that forward touched), though the LM head is applied by hand.
    """

    def __init__(self, model: nn.Module, chunk_size: int) -> None:
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def forward(self, batch: Batch, with_tokens: bool = False, with_collision: bool = False) -> SequenceLogProbs:
        return response_logprobs(
            self.model, batch, with_tokens=with_tokens, chunk_size=self.chunk_size, with_collision=with_collision
        )


def sampled_log_ratio(batch: Batch, policy: SequenceLogProbs, reference: SequenceLogProbs | None) -> dict[str, float]:
    """``sampled/log_ratio_sum`` and ``sampled/responses``: the sum over the batch's sampled responses
    of log π(y|x) − log π_ref(y|x), and how many there are (both 0 without any, or without a
    reference). Their ratio over a round's first pass is the Monte Carlo estimate of KL(π ‖ π_ref) per
    response that P3 logs, from the log-probs the step computed anyway."""
    if reference is None or batch.sampled is None:
        return {"sampled/log_ratio_sum": 0.0, "sampled/responses": 0.0}
    rows = batch.sampled.to(policy.sum.device)
    gap = policy.sum.detach().float()[rows] - reference.sum.float()[rows]  # [b, C]
    counted = policy.count[rows] > 0
    return {"sampled/log_ratio_sum": float(gap[counted].sum()), "sampled/responses": float(counted.sum())}


class Trainer:
    """One policy, one objective, one optimizer and schedule for ``total_steps`` steps.

    Args:
        accelerator: devices, processes, mixed precision and trackers.
        model: the policy (a peft model under LoRA); its trainable parameters are optimised.
        objective: what is minimised; it declares the record it reads.
        optim: learning rate, schedule, clipping, accumulation.
        total_steps: the run's optimiser steps (the schedule's length), over all rounds.
        reference: reference log-probs (``records(batch) -> [B, C]``) when the objective needs
            them; may be replaced between rounds (``trainer.reference = ...``).
        logit_chunk: response positions per LM-head chunk.
        refresh: TR-DPO's reference refresh; the reference must then be a copy it can move
            (:class:`~preftune.modeling.FrozenCopyReference`), saved with every checkpoint.
    """

    def __init__(
        self,
        *,
        accelerator: Accelerator,
        model: nn.Module,
        objective: Objective,
        optim: OptimConfig,
        total_steps: int,
        reference: Any = None,
        logit_chunk: int = 1024,
        refresh: RefreshConfig | None = None,
        sharding: ShardingPlan | None = None,
    ) -> None:
        if objective.needs_reference and reference is None:
            raise PreftuneError(f"objective '{objective}' needs a reference model, and none was set up")
        self.refresh = refresh if refresh is not None and refresh.enabled else None
        if self.refresh is not None and not hasattr(reference, "refresh"):
            raise PreftuneError("a reference refresh needs a reference copy to move (reference=copy)")
        if total_steps < 1:
            raise PreftuneError(f"a run needs at least one step, not {total_steps}")
        self.accelerator, self.objective, self.optim = accelerator, objective, optim
        self.reference, self.total_steps, self.global_step = reference, total_steps, 0
        self.model = model
        policy = PolicyLogProbs(model, logit_chunk)
        self.sharded = sharding is not None
        if sharding is not None:  # before the optimiser: it holds each process's shards
            shard(policy, model, sharding)
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise PreftuneError("the model has no trainable parameters")
        optimizer = make_optimizer(trainable, optim)
        from transformers import get_scheduler  # here: transformers' trainer utilities import peft (~2 s)

        self.scheduler = get_scheduler(
            optim.schedule,
            optimizer,
            num_warmup_steps=math.ceil(optim.warmup_ratio * total_steps),
            num_training_steps=total_steps,
        )
        self.logit_chunk = logit_chunk
        # Whether each step also reports the sampled responses' log-ratio to the reference (an
        # on-policy source switches it on, on every process alike: the statistics are reduced together).
        self.log_sampled_ratio = False
        if self.sharded:  # FSDP2 exchanges the gradients itself: no DDP wrapper
            self.policy, self.optimizer = policy, accelerator.prepare(optimizer)
        else:
            self.policy, self.optimizer = accelerator.prepare(policy, optimizer)

    def whole_parameters(self) -> AbstractContextManager[None]:
        """A context in which the policy's parameters are whole in every process (entered by all
        together): for what forwards it outside a step or reads its weights. A no-op unsharded."""
        return whole_parameters(self.model)

    # --- one step -------------------------------------------------------------------------------

    def logprobs(self, batch: Batch) -> tuple[SequenceLogProbs, SequenceLogProbs | None]:
        """``[B, C]`` log-probs of the policy (with gradients) and of the reference (without; None
        when neither the objective nor the sampled responses' log-ratio needs it), per token and with
        WPO's collision log-probs where the objective declares it reads them."""
        objective = self.objective
        with self.accelerator.autocast():
            policy = self.policy(
                batch, with_tokens=objective.needs_token_logps, with_collision=objective.needs_collision
            )
        reference = None
        if objective.needs_reference or (self.log_sampled_ratio and self.reference is not None):
            with torch.no_grad(), self.accelerator.autocast():
                # asked only when needed: a reference of the older interface takes the batch alone
                tokens = {"with_tokens": True} if objective.needs_reference_tokens else {}
                reference = self.reference.records(batch, **tokens)
        return policy, reference

    def kl_estimate(self, batch: Batch) -> torch.Tensor | None:
        """``[]`` the mean log-ratio of the batch's mismatched pairs, averaged over processes (``kto``'s
        KL estimate: :mod:`preftune.training.mismatched`); None when no term reads it. The policy scores
        them without gradient, in train mode as for its own rows (TRL's ``_compute_kl_logps``)."""
        if not self.objective.needs_mismatched:
            return None
        if batch.mismatched is None:
            raise PreftuneError(f"objective '{self.objective}' reads mismatched pairs, which this batch does not carry")
        with torch.no_grad(), self.accelerator.autocast():
            policy = response_logprobs(self.model, batch.mismatched, with_tokens=False, chunk_size=self.logit_chunk)
            reference = self.reference.records(batch.mismatched)
        return mismatched_log_ratio(policy, reference, self.accelerator.gather)

    def _reduce_stats(self, sums: dict[str, float], counts: dict[str, float]) -> dict[str, float]:
        """Each statistic's mean over the step's items on every process (one all-reduce), and
        ``items``: how many losses the step holds in all."""
        names = list(sums)
        local = torch.tensor([sums[k] for k in names] + [counts[k] for k in names], dtype=torch.float64)
        total = self.accelerator.reduce(local.to(self.accelerator.device), "sum").cpu().tolist()
        stats = {
            k: total[i] / total[len(names) + i] if total[len(names) + i] else math.nan for i, k in enumerate(names)
        }
        return stats | {"items": total[len(names) + names.index("loss")]}

    def clip_gradients(self, scale: float = 1.0) -> float:
        """Scale the accumulated gradients by ``scale`` and clip their global norm to
        ``optim.max_grad_norm``, in one pass over them; the norm after scaling, before clipping (NaN
        when there is none). Sharded, the norm is over every process's shards."""
        grads = [p.grad for p in self.policy.parameters() if p.grad is not None]
        if not grads:
            return math.nan
        if not self.sharded:
            self.accelerator.unscale_gradients()  # fp16's loss scale (refused under FSDP); else nothing
        norm = scale * whole_norm(torch.nn.utils.get_total_norm(grads))
        coefficient = scale * min(1.0, self.optim.max_grad_norm / (norm + 1e-6))  # torch's clip_grad_norm_ rule
        if coefficient != 1.0:
            with torch.no_grad():
                torch._foreach_mul_(grads, coefficient)
        return norm

    def step(self, micro_batches: Sequence[Batch]) -> dict[str, float]:
        """One optimiser step over this process's ``micro_batches`` (gradients accumulated, synced
        once); a step whose loss or gradient is not finite on any process is skipped by all.

        The step minimises the mean of the objective's per-item losses over every item of the step,
        on every process: each micro-batch's backward is of its losses' sum, and the gradient is
        scaled once by the items counted over all micro-batches and processes. So micro-batches and
        processes that hold different numbers of items (the pairs within groups, whose number depends
        on the rewards) train as one batch would. Returns the step's statistics, each the mean over
        the step's items (a per-micro-batch value counts as one)."""
        sums: dict[str, float] = {}
        counts: dict[str, float] = {}
        tokens, finite, n = 0, True, len(micro_batches)
        for i, batch in enumerate(micro_batches):
            tokens += batch.num_tokens
            context = nullcontext() if i == n - 1 else self.accelerator.no_sync(self.policy)
            with context:
                policy, reference = self.logprobs(batch)
                kl = self.kl_estimate(batch)
                out = self.objective(record_for(self.objective.record_type, policy, reference, batch.rewards, kl))
                loss = out.loss.sum()
                finite = finite and bool(torch.isfinite(loss))
                self.accelerator.backward(loss)
            values = {"loss": out.loss, **{f"loss/{k}": v for k, v in out.terms.items()}, **out.metrics}
            for name, value in values.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach().float().sum())
                counts[name] = counts.get(name, 0.0) + value.numel()
            if self.log_sampled_ratio:
                for name, value in sampled_log_ratio(batch, policy, reference).items():
                    sums[name] = sums.get(name, 0.0) + value
                    counts[name] = counts.get(name, 0.0) + 1.0  # their ratio over a pass is the KL
        stats = self._reduce_stats(sums, counts)
        items = stats.pop("items")
        finite = finite and items > 0
        # the processes' gradients were averaged, each a sum over its own items: processes / items
        # makes them the mean over every item of the step
        grad_norm = self.clip_gradients(self.accelerator.num_processes / max(items, 1.0))
        # Gradients are identical on every process after the all-reduce, so is this decision.
        finite = finite and math.isfinite(grad_norm)
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
        self.global_step += 1
        if self.refresh is not None and self.global_step % self.refresh.every == 0:
            # After the step, as TRL's SyncRefModelCallback.on_step_end: every process moves its own copy alike.
            self.reference.refresh(self.model, self.refresh.mix)
        return stats

    # --- the loop -------------------------------------------------------------------------------

    def fit(
        self,
        source: BatchSource,
        steps: int | None = None,
        hooks: Sequence[Hook] = (),
        result: TrainResult | None = None,
    ) -> TrainResult:
        """Run ``steps`` steps read from ``source`` (default: until the source or the run's
        ``total_steps`` ends), with ``hooks`` around them; ``result``: the history to extend
        (from :meth:`restore`)."""
        remaining = self.total_steps - self.global_step
        end = self.global_step + (remaining if steps is None else min(steps, remaining))
        fit = Fit(self, source, result or TrainResult(steps=self.global_step), end, tuple(hooks))
        began = time.perf_counter()
        try:
            for hook in hooks:
                hook.start(fit)
            self.policy.train()
            while self.global_step < end:
                try:
                    micro = next(source)
                except StopIteration:
                    break
                t0 = time.perf_counter()
                stats = self.step(micro)
                stats["step_s"] = time.perf_counter() - t0
                stats["tokens_per_s"] = stats.pop("tokens") / max(stats["step_s"], 1e-9)
                stats["step"] = self.global_step
                fit.result.history.append(stats)
                for hook in hooks:
                    hook.after_step(fit, stats)
            fit.result.steps = self.global_step
            for hook in hooks:
                hook.end(fit)
        finally:
            fit.collect_records()
            for hook in hooks:
                hook.close(fit)
        fit.result.seconds += time.perf_counter() - began
        return fit.result

    # --- evaluation helpers ---------------------------------------------------------------------

    @contextmanager
    def eval_mode(self) -> Iterator[None]:
        """The policy in eval mode (no dropout) for the duration, its mode restored after."""
        was_training = self.policy.training
        self.policy.eval()
        try:
            yield
        finally:
            self.policy.train(was_training)

    def pair_logprobs(self, batch: Batch) -> tuple[SequenceLogProbs, SequenceLogProbs | None]:
        """The policy's ``(chosen, rejected)`` log-probs of a batch of pairs, in the weights' own
        precision whatever the run's autocast (held-out metrics: under bf16 a young LoRA update can
        round away, and the metrics must match ``preftune evaluate``'s float32 scoring). The model is
        called directly, not through the prepared wrapper, whose forward always enters autocast."""
        with torch.autocast(self.accelerator.device.type, enabled=False):
            return as_pair(response_logprobs(self.model, batch, with_tokens=False, chunk_size=self.logit_chunk))

    # --- checkpoints ----------------------------------------------------------------------------

    def save(self, output_dir: Path, state: dict[str, Any], source_state: dict[str, Any], keep: int) -> None:
        """A checkpoint of the global step: trainable weights, optimizer, schedule, RNG, ``state``
        (JSON: history...) and the source's position (main process writes; all wait)."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        # sharded: the optimiser state gathered whole (every process takes part), as one process holds it
        if self.sharded:
            optimizer_dict = optimizer_state(self.policy, optimizer)
        else:
            optimizer_dict = optimizer.state_dict() if self.accelerator.is_main_process else {}
        with self.whole_parameters():
            if self.accelerator.is_main_process:
                save_checkpoint(
                    Path(output_dir),
                    self.global_step,
                    self.accelerator.unwrap_model(self.policy),
                    optimizer_dict,
                    self.scheduler,
                    {"step": self.global_step, **state},
                    keep,
                    source_state,
                    self.reference.state_dict() if self.refresh is not None else None,
                )
            self.accelerator.wait_for_everyone()

    def restore(self, checkpoint: Path, source: BatchSource, hooks: Sequence[Hook] = ()) -> TrainResult:
        """Continue from ``checkpoint``: weights, optimizer, schedule, RNG, the global step, the
        source's position and the named hooks' states; returns the result so far (history) to pass to
        :meth:`fit` with the same hooks."""
        optimizer = getattr(self.optimizer, "optimizer", self.optimizer)
        state = load_checkpoint(
            checkpoint,
            self.accelerator.unwrap_model(self.policy),
            optimizer,
            self.scheduler,
            load_optimizer=partial(self._load_optimizer, optimizer),
        )
        self.global_step = int(state["step"])
        if self.refresh is not None:
            self.restore_reference(checkpoint)
        source.load_state_dict(state.get("source") or {"step": self.global_step})
        saved_hooks = state.get("hooks", {})
        for hook in hooks:
            if hook.name in saved_hooks:
                hook.load_state_dict(saved_hooks[hook.name])
        skipped = sum(int(h.get("skipped", 0)) for h in state["history"])
        return TrainResult(self.global_step, list(state["history"]), skipped_steps=skipped)

    def _load_optimizer(self, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
        """A checkpoint's optimiser state: keyed by parameter name when an FSDP run wrote it (whole,
        :func:`~preftune.training.sharding.optimizer_state`), which any run loads, each process its
        shards; else by position (``optimizer.state_dict()``), which only an unsharded run loads."""
        groups = saved.get("param_groups") or [{}]
        by_name = any(isinstance(p, str) for p in groups[0].get("params", []))
        if by_name:
            load_optimizer_state(self.accelerator.unwrap_model(self.policy), optimizer, saved)
        elif self.sharded:
            raise PreftuneError(
                "--resume: this checkpoint was written by an unsharded run (DDP or one process), whose optimiser "
                "state FSDP cannot split: resume it as it was launched"
            )
        else:
            optimizer.load_state_dict(saved)

    def restore_reference(self, checkpoint: Path) -> None:
        """The refreshed reference as ``checkpoint`` saved it; refused when it saved none (a run
        without the refresh), since the copy taken now would be another reference."""
        path = Path(checkpoint) / REFERENCE_FILE
        if not path.is_file():
            raise PreftuneError(
                f"--resume: {checkpoint} holds no refreshed reference ({REFERENCE_FILE}): it was written without "
                "the reference refresh; resume with the saved settings"
            )
        from safetensors.torch import load_file

        self.reference.load_state_dict(load_file(str(path)))


def responses_read(objective: Objective) -> int | None:
    """Responses per example a batch must hold for ``objective``: all of a group's, both of a pair's,
    or only the chosen one when no term reads the rejected response (no forward pass for it)."""
    if objective.record_type is GroupRecord:
        return None
    return 2 if objective.needs_rejected else 1


def make_plan(pairs: Sequence[Any], optim: OptimConfig, processes: int, group_by_length: bool) -> BatchPlan:
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
