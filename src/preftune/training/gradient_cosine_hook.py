"""P3's Lemma 6.2 during training: the cosine between ∇θ log π(y_w) and ∇θ log π(y_l) on held-out pairs.

    eval.gradient_cosine_every: 20   # steps; 0: off
    eval.gradient_cosine_pairs: 8    # the first k held-out pairs

Before the first step, every ``eval.gradient_cosine_every`` steps and at the end of a stage, the
policy's per-pair cosine (:func:`preftune.modeling.gradient_cosine.gradient_cosines`, over the
trainable parameters, under the run's autocast) is measured on the first k held-out pairs, one pair
at a time. The mean ± standard error is printed, logged to the trackers as ``eval/grad_cosine`` and
kept, with the per-pair values, in ``TrainResult.records["gradient_cosines"]`` (checkpoints, the stage's
record in ``outcome.json``) for plotting against the step. The pairs are shared over the processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from accelerate.utils import gather_object
from rich.console import Console

from preftune.data import Batcher, TokenizedGroup
from preftune.evaluation.statistical import mean_and_stderr
from preftune.modeling.gradient_cosine import gradient_cosines
from preftune.training.hooks import Fit, RecordingHook
from preftune.training.settings import EvalConfig


class GradientCosineEvaluation(RecordingHook):
    """The held-out gradient cosine (see the module docstring) at the start, every ``config.gradient_cosine_every``
    steps and at the end of a fit."""

    name = "gradient_cosines"

    def __init__(
        self, pairs: Sequence[TokenizedGroup], batcher: Batcher, config: EvalConfig, console: Console | None = None
    ) -> None:
        super().__init__()
        self.pairs = list(pairs)[: config.gradient_cosine_pairs]
        self.batcher, self.every = batcher, config.gradient_cosine_every
        self.console = console or Console(stderr=True, soft_wrap=True)

    def start(self, fit: Fit) -> None:
        if fit.trainer.global_step == 0:  # a resumed run has its start's record from the checkpoint
            self.log(fit)

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        done = fit.trainer.global_step
        if self.every and done % self.every == 0 and done < fit.end_step:
            self.log(fit)

    def end(self, fit: Fit) -> None:
        self.log(fit)

    def log(self, fit: Fit) -> dict[str, Any] | None:
        """Measure now; the record kept (None without held-out pairs)."""
        trainer = fit.trainer
        values = self.evaluate(trainer)
        if not values:
            return None
        step = trainer.global_step
        summary = mean_and_stderr(torch.tensor(values, dtype=torch.float64))
        nonpositive = sum(1 for v in values if v <= 0)
        record = {"step": step, **summary.to_dict(), "nonpositive": nonpositive, "values": values}
        self.records.append(record)
        trainer.accelerator.log({"eval/grad_cosine": summary.mean}, step=step)
        if trainer.accelerator.is_main_process:
            self.console.print(
                f"gradient cosine at step {step}/{trainer.total_steps}: {summary} over {len(values)} "
                f"held-out pairs ({nonpositive} ≤ 0)",
                highlight=False,
            )
        return record

    def evaluate(self, trainer: Any) -> list[float]:
        """Per-pair cosines of the first k held-out pairs, in order, each process measuring its share."""
        if not self.pairs:
            return []
        accelerator = trainer.accelerator
        mine = torch.arange(len(self.pairs)).tensor_split(accelerator.num_processes)[accelerator.process_index]
        policy = accelerator.unwrap_model(trainer.policy)  # the module of the policy's forward, not DDP's wrapper
        values: list[float] = []
        with accelerator.autocast():
            for i in mine.tolist():
                batch = self.batcher([self.pairs[i]], [i], group_size=2).to(accelerator.device)
                values += gradient_cosines(policy.model, batch, chunk_size=policy.chunk_size).tolist()
        return [v for part in gather_object([values]) for v in part]


def gradient_cosine_hooks(
    pairs: Sequence[TokenizedGroup], batcher: Batcher, config: EvalConfig, console: Console
) -> list[GradientCosineEvaluation]:
    """One :class:`GradientCosineEvaluation` when ``config.gradient_cosine_every`` asks for it, else none."""
    return [GradientCosineEvaluation(pairs, batcher, config, console)] if config.gradient_cosine_every else []
