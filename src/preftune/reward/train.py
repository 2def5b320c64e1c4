"""Bradley–Terry reward-model training: −log σ(r_chosen − r_rejected), mean over pairs, AdamW.

    >>> config = RewardConfig(model="tiny-random", output_dir="out/rm", data=DataConfig(train="pairs.jsonl"))
    >>> prepared = prepare(config)                # data, split and tokens: every check before a model loads
    >>> result = train_reward_model(prepared)     # held-out accuracy before/after, the saved folder

Deterministic given ``config.seed``: the head's initialisation and the order of the pairs come from it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from preftune.data.split import SplitSummary
from preftune.data.tokenize import TokenizedPair
from preftune.errors import PreftuneError
from preftune.modeling.precision import auto_mixed_precision
from preftune.reward.config import METRICS_FILE, RewardConfig, check_config
from preftune.reward.data import load_pairs, sequences, tokenize_pairs
from preftune.reward.model import (
    apply_reward_lora,
    load_reward_model,
    load_reward_tokenizer,
    rewards,
    save_reward_model,
    score_rows,
)


def bt_loss(chosen: Tensor, rejected: Tensor) -> Tensor:
    """Bradley–Terry loss: mean over pairs of −log σ(r_c − r_r); ``chosen``, ``rejected`` ``[B]`` -> scalar."""
    return -F.logsigmoid(chosen - rejected).mean()


@dataclass(frozen=True)
class PairAccuracy:
    """How often r_chosen > r_rejected (ties count half) on n pairs, ± sqrt(p(1−p)/n), and the mean margin."""

    accuracy: float
    stderr: float
    margin: float
    loss: float
    pairs: int

    @classmethod
    def of(cls, chosen: list[float], rejected: list[float]) -> PairAccuracy:
        """From the rewards of each pair's chosen and rejected rows (NaN for no pairs)."""
        n = len(chosen)
        if n == 0:
            return cls(math.nan, math.nan, math.nan, math.nan, 0)
        c, r = torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)
        wins = (c > r).double() + 0.5 * (c == r).double()
        p = float(wins.mean())
        return cls(p, math.sqrt(p * (1 - p) / n), float((c - r).mean()), float(bt_loss(c, r)), n)

    def __str__(self) -> str:
        return f"{self.accuracy:.3f} ± {self.stderr:.3f} (n={self.pairs}, margin {self.margin:+.3f})"


def autocast(model: nn.Module, precision: str) -> AbstractContextManager[Any]:
    """bf16 autocast on the model's device for ``bf16`` (and ``auto`` where the hardware has bf16 units).

    Training only: held-out accuracy is measured in float32, as the saved model scores.
    """
    chosen = auto_mixed_precision() if precision == "auto" else precision
    if chosen != "bf16":
        return nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)


def evaluate_pairs(
    model: nn.Module, pairs: list[TokenizedPair], pad_id: int, batch_size: int, progress: str | None = None
) -> PairAccuracy:
    """Accuracy, standard error, mean margin and BT loss of ``model`` on tokenised pairs (no grad, eval mode).

    ``progress``: the name of a bar with ETA over the scoring batches, or None for none.
    """
    was_training = model.training
    model.eval()
    chosen, rejected = sequences(pairs)
    scores = score_rows(model, chosen + rejected, pad_id, batch_size, progress=progress)
    model.train(was_training)
    return PairAccuracy.of(scores[: len(pairs)], scores[len(pairs) :])


@dataclass
class Prepared:
    """A run with its data read, split and tokenised, and nothing loaded but the tokenizer."""

    config: RewardConfig
    tokenizer: Any
    train: list[TokenizedPair]
    held_out: list[TokenizedPair]
    split: SplitSummary | None

    @property
    def steps(self) -> int:
        """Optimiser steps of the run: epochs × ⌈train pairs / batch size⌉."""
        return self.config.epochs * math.ceil(len(self.train) / self.config.batch_size)


def prepare(config: RewardConfig) -> Prepared:
    """Check the settings, read and split the pairs, load the tokenizer and tokenise: no model yet.

    Raises:
        PreftuneError: any bad setting or input, as one line.
    """
    check_config(config)
    pairs = load_pairs(config.data)  # data errors come before the tokenizer loads
    tokenizer = load_reward_tokenizer(config.model, config.chat_template)
    d = config.data
    train = tokenize_pairs(pairs.train, tokenizer, d.max_length, d.max_prompt_length)
    held_out = tokenize_pairs(pairs.held_out, tokenizer, d.max_length, d.max_prompt_length)
    return Prepared(config, tokenizer, train, held_out, pairs.split)


@dataclass
class RewardResult:
    """What a run did: held-out accuracy before and after, the BT loss per epoch, where it saved."""

    before: PairAccuracy
    after: PairAccuracy
    epoch_losses: list[float]
    steps: int
    seconds: float
    output_dir: Path
    model: Any = field(default=None, repr=False)  # the trained model (peft-wrapped under LoRA), for callers


def build_model(prepared: Prepared) -> nn.Module:
    """The model to train: head initialised from the seed, LoRA-wrapped when asked, in train mode."""
    config = prepared.config
    torch.manual_seed(config.seed)
    model = load_reward_model(config.model, prepared.tokenizer)
    if config.lora:
        model = apply_reward_lora(
            model, config.lora_rank, config.lora_alpha, config.target_modules, config.lora_last_layers
        )
    else:
        for param in model.parameters():
            param.requires_grad_(True)
    return model.train()


def run_epochs(
    model: nn.Module, prepared: Prepared, on_step: Callable[[dict[str, float]], None] | None = None
) -> list[float]:
    """AdamW over the training pairs, ``epochs`` times in seeded order; the mean BT loss of each epoch."""
    config, pairs = prepared.config, prepared.train
    pad_id = prepared.tokenizer.pad_token_id
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    order_rng = torch.Generator().manual_seed(config.seed)
    losses = []
    for _ in range(config.epochs):
        order = torch.randperm(len(pairs), generator=order_rng).tolist()
        total = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = [pairs[i] for i in order[start : start + config.batch_size]]
            chosen, rejected = sequences(batch)
            with autocast(model, config.precision):
                scores = rewards(model, chosen + rejected, pad_id).float()  # [2B]: chosen rows, then rejected
            c, r = scores[: len(batch)], scores[len(batch) :]
            loss = bt_loss(c, r)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            c, r, value = c.detach(), r.detach(), float(loss.detach())
            total += value * len(batch)
            if on_step is not None:
                accuracy = float(((c > r).float() + 0.5 * (c == r).float()).mean())
                on_step({"loss": value, "accuracy": accuracy, "margin": float((c - r).mean())})
        losses.append(total / len(pairs))
    return losses


def train_reward_model(
    prepared: Prepared, progress: Callable[[int], AbstractContextManager[Any]] | None = None, *, save: bool = True
) -> RewardResult:
    """Train, evaluate the held-out pairs before and after, and save the model with ``metrics.json``.

    ``progress(total_steps)``: a context manager around the training steps whose value has
    ``advance(stats)`` (e.g. ``StepProgress``), called after each step with loss, accuracy and margin;
    when given, the held-out scoring before and after shows a bar of its own too.
    """
    config, began = prepared.config, time.perf_counter()
    if not prepared.train:
        raise PreftuneError("no training pairs left after tokenisation")
    model = build_model(prepared)
    pad_id, eval_batch = prepared.tokenizer.pad_token_id, 2 * config.batch_size
    shown = progress is not None  # a caller that shows the training steps also sees the held-out scoring
    before = evaluate_pairs(model, prepared.held_out, pad_id, eval_batch, "held-out before" if shown else None)
    with progress(prepared.steps) if progress is not None else nullcontext() as bar:
        losses = run_epochs(model, prepared, bar.advance if bar is not None else None)
    after = evaluate_pairs(model, prepared.held_out, pad_id, eval_batch, "held-out after" if shown else None)
    model.eval()
    out = Path(config.output_dir).expanduser()
    result = RewardResult(before, after, losses, prepared.steps, time.perf_counter() - began, out, model)
    if save:
        save_reward_model(
            model, prepared.tokenizer, out, {METRICS_FILE: json.dumps(metrics(prepared, result), indent=2)}
        )
    return result


def metrics(prepared: Prepared, result: RewardResult) -> dict[str, Any]:
    """The JSON of ``metrics.json``: settings, split, held-out accuracy before/after, losses, timings."""
    return {
        "config": prepared.config.to_dict(),
        "train_pairs": len(prepared.train),
        "held_out_pairs": len(prepared.held_out),
        "split": prepared.split.to_dict() if prepared.split is not None else None,
        "held_out_before": _finite(asdict(result.before)),
        "held_out_after": _finite(asdict(result.after)),
        "epoch_losses": result.epoch_losses,
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
    }


def _finite(values: dict[str, Any]) -> dict[str, Any]:
    """NaN (no held-out pairs) as None, so ``metrics.json`` is strict JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in values.items()}
