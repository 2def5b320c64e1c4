"""``preftune train`` with ``online.rounds`` > 0: one stage of P3's unified loop (docs/methods.md §4).

The prompts are data.train's (each distinct prompt once, those with room for ``max_new_tokens``);
data.train's pairs are also what ``online.mix`` blends in, and the held-out pairs are scored before
the first round, every ``eval.every`` steps and after the last round. Each round's statistics go
to the console, the trackers (``online/*``) and ``rounds.jsonl`` in the stage folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from rich.console import Console

from preftune.data.batcher import Batcher
from preftune.errors import PreftuneError
from preftune.files import write_atomic
from preftune.generation.prompts import encode_prompt, prompt_key
from preftune.generation.sampling import SamplingConfig
from preftune.modeling import AdapterDisabledReference, apply_lora
from preftune.objectives import Objective
from preftune.training.checkpoint import latest_checkpoint
from preftune.training.config import RunConfig, StageConfig
from preftune.training.gradient_cosine_hook import gradient_cosine_hooks
from preftune.training.hooks import Callbacks, Checkpoints, HeldOutEvaluation, Logging, Progress, StopOnNonFinite
from preftune.training.loop import Trainer
from preftune.training.online import OnlineLoop, OnlineSettings, RoundStats, Sampler
from preftune.training.outputs import finish_stage
from preftune.training.references import make_reference
from preftune.training.stage_setup import resume_hint, start_trackers

ROUNDS_FILE, SAMPLES_FILE = "rounds.jsonl", "round_samples.jsonl"


def online_settings(config: RunConfig) -> OnlineSettings:
    o = config.online
    return OnlineSettings(
        rounds=o.rounds, prompts_per_round=o.prompts_per_round, samples_per_prompt=o.samples_per_prompt,
        passes=o.passes, batch_size=config.optim.batch_size, pairing=o.pairing, reward_gap=o.reward_gap,
        mix=o.mix, missing_eos_penalty=o.missing_eos_penalty, seed=config.optim.seed,
    )  # fmt: skip


def round_prompts_of(examples: Sequence[Any], tokenizer: Any, room: int) -> tuple[list[Any], list[list[int]]]:
    """Each distinct prompt of ``examples`` once, with its ids, if it leaves ``room`` tokens for the response."""
    prompts, ids, seen = [], [], set()
    for example in examples:
        key = prompt_key(example.prompt)
        if key in seen:
            continue
        seen.add(key)
        encoded = encode_prompt(tokenizer, example.prompt)
        if len(encoded) <= room:
            prompts.append(example.prompt)
            ids.append(encoded)
    if not prompts:
        raise PreftuneError(f"no prompt of data.train fits data.max_length less online.max_new_tokens ({room} tokens)")
    return prompts, ids


def online_sampler(config: RunConfig, tokenizer: Any, accelerator: Accelerator, say: Any) -> Sampler | None:
    """Who samples each round: a colocated vLLM engine (``online.backend``), a bfloat16 copy of the
    policy (``online.sample_dtype``), or None: the policy itself through transformers' ``generate``.

    ``backend=auto`` takes vLLM where it is installed, the run is on a CUDA GPU in one process and the
    model is a full checkpoint; ``vllm`` was checked possible before any model loaded
    (:func:`~preftune.training.checks.check`). The engine is built here, after the policy, so that
    its ``online.vllm_gpu_memory`` share is taken from what the trainer left. Otherwise
    ``sample_dtype=auto`` samples from a bfloat16 copy where bf16 is native
    (:mod:`preftune.generation.copy_sampler`).
    """
    from preftune.generation.copy_sampler import copy_sampler_for
    from preftune.generation.vllm_backend import ColocatedVllmSampler, colocate_missing

    o = config.online
    on_gpu_vllm = o.backend != "hf" and accelerator.device.type == "cuda"
    if on_gpu_vllm and (o.backend == "vllm" or colocate_missing(config.model.name, accelerator.num_processes) is None):
        say(f"sampling with vLLM in this process ({o.vllm_gpu_memory:.0%} of the GPU), the weights loaded each "
            "round", highlight=False)  # fmt: skip
        return ColocatedVllmSampler(config.model.name, tokenizer, seed=config.optim.seed,
                                    gpu_memory_utilization=o.vllm_gpu_memory)  # fmt: skip
    copy = copy_sampler_for(o.sample_dtype, config.model.dtype)
    if copy is not None:
        say("sampling from a bfloat16 copy of the policy, its weights refreshed each round "
            f"(online.sample_dtype={o.sample_dtype})", highlight=False)  # fmt: skip
    return copy


def run_online_stage(
    config: RunConfig, stage: StageConfig, objective: Objective, stage_dir: Path, model: Any, tokenizer: Any,
    train_examples: Sequence[Any], inputs: Any, batcher: Batcher, accelerator: Accelerator, console: Console,
    callbacks: Sequence[Any], labeller: Any, win_rates: Any = None,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Train ``objective`` (``stage``'s, built by the run's checks) on-policy for ``online.rounds`` rounds;
    the model and the stage's record.

    ``labeller``: built from ``online.labeller`` by the caller before the policy loads, so a bad
    spec or a missing reward model stops the run before any model work. ``win_rates``: the stage's
    :class:`~preftune.training.win_rates.WinRateEvaluation` (after every ``eval.win_rate_every``
    steps and the last round), if any.
    """
    say = console.print if accelerator.is_main_process else (lambda *a, **k: None)
    o, settings = config.online, online_settings(config)
    if config.lora.enabled:
        lora = config.lora
        model = apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                           target_modules=lora.target_modules, last_layers=lora.last_layers)  # fmt: skip
    kind = stage.reference if stage.reference in ("adapter", "copy") else ("adapter" if config.lora.enabled else "copy")
    train_ref, eval_ref = make_reference(kind, objective, model, config, [], inputs.held_out, batcher, accelerator)
    total = OnlineLoop.total_steps(settings, objective)
    trainer = Trainer(accelerator=accelerator, model=model, objective=objective, optim=config.optim,
                      total_steps=total, reference=train_ref, logit_chunk=config.logit_chunk)  # fmt: skip
    examples = train_examples[: config.data.train_size] if config.data.train_size else train_examples
    prompts, prompt_ids = round_prompts_of(examples, tokenizer, config.data.max_length - o.max_new_tokens)
    sampling = SamplingConfig(temperature=o.temperature, top_p=o.top_p, top_k=o.top_k, max_new_tokens=o.max_new_tokens,
                              batch_size=config.eval.batch_size)  # fmt: skip
    # the KL logged per round: against the training reference, else the adapters switched off
    kl_reference = train_ref or (AdapterDisabledReference(model, chunk_size=config.logit_chunk)
                                 if config.lora.enabled else None)  # fmt: skip
    loop = OnlineLoop(trainer, tokenizer, prompts, prompt_ids, labeller, settings, sampling, batcher, inputs.train,
                      kl_reference, sampler=online_sampler(config, tokenizer, accelerator, say))  # fmt: skip
    say(f"stage '{stage.name}': {objective.describe()}; on-policy: {o.rounds} rounds of {o.prompts_per_round} "
        f"prompts x {o.samples_per_prompt} samples (of {len(prompts)} prompts), labeller {labeller.identity()}",
        highlight=False)  # fmt: skip
    checkpoints = Checkpoints(stage_dir, config.save_every, config.keep_checkpoints, total)
    evaluation = HeldOutEvaluation(inputs.held_out, eval_ref, batcher, config.eval, console)
    periodic = [evaluation, *([win_rates] if win_rates is not None else []),
                *gradient_cosine_hooks(inputs.held_out, batcher, config.eval, console)]  # fmt: skip
    hooks = [StopOnNonFinite(config.optim.max_bad_steps, checkpoints), Logging(), Progress(console), *periodic,
             checkpoints, Callbacks(callbacks)]  # fmt: skip
    start_trackers(accelerator, config, stage)
    began = time.perf_counter()
    with resume_hint(stage_dir, f"stage '{stage.name}'", say):
        rounds = _run_rounds(loop, hooks, periodic, settings.rounds, stage_dir, config.resume, say)
    result = loop.result
    result.seconds = time.perf_counter() - began
    record = finish_stage(stage, stage_dir, result, model, tokenizer, config, accelerator, base_dir=None,
                          later_stage=False)  # fmt: skip
    record["rounds"] = [s.to_dict() for s in rounds]
    record["round_samples"] = _last_samples(stage_dir / SAMPLES_FILE)
    say(f"stage '{stage.name}': {result.steps} steps in {result.seconds:.0f} s; model in {record['model']}")
    return model, record


def _run_rounds(
    loop: OnlineLoop, hooks: list, periodic: list, total: int, stage_dir: Path, resume: bool, say: Any
) -> list[RoundStats]:
    """Every round's statistics, the rounds run (from the newest checkpoint's round when resuming)."""
    trainer, rounds, start = loop.trainer, [], 0
    saved = latest_checkpoint(stage_dir) if resume else None
    if saved is not None:  # finish the round the checkpoint was taken in, on its samples
        say(f"resuming from {saved}", highlight=False)
        earlier = _read_rounds(stage_dir)
        stats = loop.resume_round(saved, hooks)
        done = [r for r in earlier if r.round == stats.round]
        rounds = [r for r in earlier if r.round < stats.round] + (done if stats.steps == 0 and done else [stats])
        _log_round(rounds[-1], trainer, stage_dir, rounds, say)
        start = int(stats.round) + 1
    for r in range(start, total):
        for hook in periodic:  # held-out pairs before the first round and after the last
            hook.at_end = r == total - 1
        stats = loop.run_round(r, hooks)
        rounds.append(stats)
        _log_round(stats, trainer, stage_dir, rounds, say)
        if trainer.accelerator.is_main_process:
            _append_samples(stage_dir / SAMPLES_FILE, loop.shown)
    return rounds


def _append_samples(path: Path, shown: list[dict[str, Any]]) -> None:
    """The round's shown samples added to ``round_samples.jsonl`` (rewritten atomically; a round
    redone after a resume replaces its earlier lines)."""
    rounds = {row["round"] for row in shown}
    old = [line for line in (path.read_text(encoding="utf-8").splitlines() if path.exists() else [])
           if json.loads(line)["round"] not in rounds]  # fmt: skip
    new = [json.dumps(row, ensure_ascii=False) for row in shown]
    write_atomic(path, "".join(line + "\n" for line in old + new))


def _last_samples(path: Path) -> list[dict[str, Any]]:
    """The last round's shown samples."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    last = max((row["round"] for row in rows), default=None)
    return [row for row in rows if row["round"] == last]


def _read_rounds(stage_dir: Path) -> list[RoundStats]:
    path = stage_dir / ROUNDS_FILE
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [RoundStats.from_dict(json.loads(line)) for line in lines]


def _log_round(stats: RoundStats, trainer: Trainer, stage_dir: Path, rounds: list[RoundStats], say: Any) -> None:
    """The round on the console, in the trackers and in ``rounds.jsonl`` (rewritten atomically)."""
    say(str(stats), highlight=False)
    trainer.accelerator.log({f"online/{k}": v for k, v in stats.to_dict().items()}, step=trainer.global_step)
    if trainer.accelerator.is_main_process:
        write_atomic(stage_dir / ROUNDS_FILE, "".join(json.dumps(s.to_dict()) + "\n" for s in rounds))
