"""``python buffer_worker.py OUT WEIGHTS REPORT [--kill-after K] [--resume]``: one round of on-policy
style training over a :class:`~preftune.training.sources.BufferSource`, run as its own process.

The tiny model under LoRA (rank 4, float32, CPU) trains with ``reinforce`` on a buffer of 16
groups of 3 responses made from real bundled HH-RLHF pairs, 2 passes of 4 steps (8 steps of 4
groups), with a checkpoint after every step into ``OUT``. At the end the trainable weights go
to ``WEIGHTS`` (safetensors) and a JSON report to ``REPORT``: the history's steps and losses and
the number of steps this process ran.

- ``--kill-after K``: the process sends itself SIGKILL right after step K (and its checkpoint).
- ``--resume``: continue from the newest checkpoint in ``OUT``. The buffer is then built from
  *other* groups (of other HH pairs, other rewards), as a resumed on-policy run cannot sample
  the round again: the run can only equal an uninterrupted one if its samples come from the
  checkpoint's source state.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from preftune.data import Batcher, Origin, bundled_path, load_preference_data, tokenize_examples
from preftune.data.groups import TokenizedGroup
from preftune.modeling import apply_lora, load_model, load_tokenizer, tiny_model_path
from preftune.objectives import build
from preftune.run.config import OptimConfig
from preftune.training import make_accelerator
from preftune.training.checkpoint import latest_checkpoint, trainable_state
from preftune.training.hooks import Checkpoints, Hook
from preftune.training.loop import Trainer
from preftune.training.sources import BufferSource

GROUPS = 16  # buffer size: 4 steps of 4 groups per pass
C = 3  # responses per group
BATCH = 4
PASSES = 2
TOTAL_STEPS = 8  # PASSES × GROUPS / BATCH
SEED = 7
MAX_LENGTH = 96


def hh_groups(pairs, salt: int) -> list[TokenizedGroup]:
    """Groups of C responses to each pair's prompt (chosen and rejected responses of the pairs,
    rotated) with rewards in 0..4 that depend on ``salt``."""
    responses = [r for p in pairs for r in (p.chosen_ids, p.rejected_ids)]
    return [
        TokenizedGroup(
            pair.prompt_ids,
            tuple(list(responses[(2 * i + k) % len(responses)]) for k in range(C)),
            tuple(float((i * 7 + k * 3 + salt) % 5) for k in range(C)),
            Origin("hh-harmless", i + 1),
        )
        for i, pair in enumerate(pairs)
    ]


def buffer_samples(other: bool = False) -> tuple[list[TokenizedGroup], int]:
    """The round's 16 groups (``other``: 16 groups of the next 16 HH pairs, other rewards) and the pad id."""
    tokenizer = load_tokenizer(tiny_model_path())
    examples, _ = load_preference_data(bundled_path("hh-harmless"))
    # prompts cut (from the left) to 64 tokens, so every row keeps room for its responses
    pairs, _ = tokenize_examples(examples[: 2 * GROUPS], tokenizer, max_length=MAX_LENGTH, max_prompt_length=64)
    assert len(pairs) == 2 * GROUPS, "every one of the first rows must give a pair"
    groups = hh_groups(pairs[GROUPS:], salt=3) if other else hh_groups(pairs[:GROUPS], salt=0)
    return groups, tokenizer.pad_token_id


class KillAfter(Hook):
    """SIGKILL this process right after step ``k``: no clean-up, no ``close``, as an OOM kill."""

    def __init__(self, k: int) -> None:
        self.k = k

    def after_step(self, fit, stats) -> None:
        if fit.trainer.global_step == self.k:
            os.kill(os.getpid(), signal.SIGKILL)


class CountSteps(Hook):
    """How many steps this process ran."""

    def __init__(self) -> None:
        self.steps = 0

    def after_step(self, fit, stats) -> None:
        self.steps += 1


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("weights", type=Path)
    parser.add_argument("report", type=Path)
    parser.add_argument("--kill-after", type=int)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    path = tiny_model_path()
    # The resumed process gets other prompts, responses and rewards: whatever it trains on after
    # restore() must come from the checkpoint.
    samples, pad_id = buffer_samples(other=args.resume)

    accelerator = make_accelerator("no", cpu=True)
    model = load_model(path, dtype="float32")
    torch.manual_seed(0)  # LoRA's A matrices are drawn from torch's generator: the same in every run
    model = apply_lora(model, rank=4)
    source = BufferSource(samples, Batcher(pad_id, "shared"), batch_size=BATCH, passes=PASSES, seed=SEED)
    trainer = Trainer(
        accelerator=accelerator,
        model=model,
        objective=build("reinforce"),
        optim=OptimConfig(lr=5e-3, batch_size=BATCH, warmup_ratio=0.0),
        total_steps=TOTAL_STEPS,
    )
    result = None
    if args.resume:
        checkpoint = latest_checkpoint(args.out)
        assert checkpoint is not None, f"no checkpoint in {args.out}"
        result = trainer.restore(checkpoint, source)
    counter = CountSteps()
    hooks: list[Hook] = [Checkpoints(args.out, every=1, keep=2, total_steps=TOTAL_STEPS), counter]
    if args.kill_after is not None:
        hooks.append(KillAfter(args.kill_after))
    result = trainer.fit(source, hooks=hooks, result=result)

    args.weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(args.weights))
    report = {
        "steps": [int(h["step"]) for h in result.history],
        "losses": [h["loss"] for h in result.history],
        "ran": counter.steps,
        "global_step": trainer.global_step,
    }
    args.report.write_text(json.dumps(report), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
