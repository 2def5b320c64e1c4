"""``preftune train`` with ``online.rounds`` > 0: the feed of an on-policy stage (P3's unified
loop, docs/methods.md §4), for :func:`~preftune.run.stage.train_stage`.

The prompts are data.train's (each distinct prompt once, those with room for ``sampling.max_new_tokens``);
data.train's pairs are also what ``online.mix`` blends in, and the held-out pairs are scored before
the first round, every ``eval.every`` steps and after the last round. Each round's statistics go
to the console, the trackers (``online/*``) and ``rounds.jsonl`` in the stage folder; a few of
its samples to ``round_samples.jsonl``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from preftune.errors import PreftuneError
from preftune.files import write_atomic
from preftune.generation.prompts import encode_prompt, prompt_key
from preftune.generation.sampling import SamplingConfig
from preftune.modeling import AdapterDisabledReference
from preftune.objectives import Objective, PairRecord, WithinGroups
from preftune.run.config import RunConfig, StageConfig
from preftune.run.references import make_reference, reference_kind
from preftune.training import (
    Checkpoints,
    Hook,
    OnlineSettings,
    OnPolicySource,
    RoundCheckpoints,
    RoundLog,
    RoundStats,
    Trainer,
)
from preftune.training.online import Sampler

ROUNDS_FILE, SAMPLES_FILE = "rounds.jsonl", "round_samples.jsonl"


def online_settings(config: RunConfig) -> OnlineSettings:
    """The engine's settings of the loop, read once from ``online`` (with ``sampling.n``, and ``optim``'s
    batch size and seed)."""
    return OnlineSettings.read_from(
        config.online, samples_per_prompt=config.sampling.n, batch_size=config.optim.batch_size, seed=config.optim.seed
    )


@dataclass(frozen=True)
class RoundInputs:
    """What an on-policy stage reads that needs no model, built (and so checked) before the policy
    loads: the labeller (a bad spec or a missing reward model stops the run there) and the prompts
    with room for ``sampling.max_new_tokens``."""

    labeller: Any
    prompts: list[Any]
    prompt_ids: list[list[int]]


def round_inputs(config: RunConfig, train: Sequence[Any], tokenizer: Any) -> RoundInputs:
    """The labeller of ``online.labeller`` and the round prompts of data.train (``data.train_size`` of them)."""
    from preftune.judging.labellers import make_labeller

    labeller = make_labeller(config.online.labeller)
    examples = train[: config.data.train_size] if config.data.train_size else train
    room = config.data.max_length - config.sampling.max_new_tokens
    return RoundInputs(labeller, *round_prompts_of(examples, tokenizer, room))


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
        raise PreftuneError(
            f"no prompt of data.train fits data.max_length less sampling.max_new_tokens ({room} tokens)"
        )
    return prompts, ids


def online_sampler(config: RunConfig, tokenizer: Any, accelerator: Accelerator, say: Any) -> Sampler | None:
    """Who samples each round: a colocated vLLM engine (``sampling.backend``), a bfloat16 copy of the
    policy (``sampling.dtype``), or None: the policy itself through transformers' ``generate``.

    ``backend=auto`` takes vLLM where it is installed, the run is on a CUDA GPU in one process and the
    model is a full checkpoint; ``vllm`` was checked possible before any model loaded
    (:func:`~preftune.run.checks.check`). The engine is built here, after the policy, so that
    its ``sampling.vllm_gpu_memory`` share is taken from what the trainer left. Otherwise
    ``sampling.dtype=auto`` samples from a bfloat16 copy where bf16 is native
    (:mod:`preftune.generation.copy_sampler`).
    """
    from preftune.generation.copy_sampler import copy_sampler_for
    from preftune.generation.vllm_backend import ColocatedVllmSampler, colocate_missing

    s = config.sampling
    on_gpu_vllm = s.backend != "hf" and accelerator.device.type == "cuda"
    if on_gpu_vllm and (s.backend == "vllm" or colocate_missing(config.model.name, accelerator.num_processes) is None):
        say(
            f"sampling with vLLM in this process ({s.vllm_gpu_memory:.0%} of the GPU), the weights loaded each round",
            highlight=False,
        )
        return ColocatedVllmSampler(
            config.model.name, tokenizer, seed=config.optim.seed, gpu_memory_utilization=s.vllm_gpu_memory
        )
    copy = copy_sampler_for(s.dtype, config.model.dtype)
    if copy is not None:
        say(
            f"sampling from a bfloat16 copy of the policy, its weights refreshed each round (sampling.dtype={s.dtype})",
            highlight=False,
        )
    return copy


def trained_objective(objective: Objective, settings: OnlineSettings) -> Any:
    """What an on-policy stage trains: a pairwise objective with ``online.pairing=all`` reads every
    pair within each sampled group in place (:class:`~preftune.objectives.WithinGroups`: each response
    forwarded once, not once per pair it sits in); offline pairs mixed in (``online.mix``) are pairs of
    their own, so then the round's pairs are built as items."""
    if settings.pairing == "all" and objective.record_type is PairRecord and settings.mix == 0:
        return WithinGroups(objective, settings.reward_gap)
    return objective


class OnPolicyFeed:
    """An on-policy stage's feed: an :class:`~preftune.training.OnPolicySource` over data.train's
    prompts, a live reference (the adapters switched off, or a frozen copy: new samples each round
    cannot be precomputed), and a :class:`~preftune.training.RoundLog` writing the round files.

    Its labeller and prompts (``parts.round_inputs``) were built before the policy loaded, so a bad
    spec, a missing reward model or prompts too long stopped the run before any model work."""

    def __init__(self, parts: Any, stage: StageConfig, objective: Objective, model: Any) -> None:
        config = parts.config
        self.parts, self.model, self.optim = parts, model, config.optim
        self.settings = online_settings(config)
        self.objective = trained_objective(objective, self.settings)
        self.total_steps = OnPolicySource.total_steps(self.settings, self.objective)
        kind = reference_kind(stage.reference, config.lora.enabled, on_policy=True)
        self.train_reference, self.eval_reference = make_reference(
            kind, objective, model, config, [], parts.inputs.held_out, parts.batcher, parts.accelerator
        )
        rounds = parts.round_inputs
        self.labeller, self.prompts, self.prompt_ids = rounds.labeller, rounds.prompts, rounds.prompt_ids
        o = config.online
        parts.say(
            f"on-policy: {o.rounds} rounds of {o.prompts_per_round} prompts x {config.sampling.n} samples "
            f"(of {len(self.prompts)} prompts), labeller {self.labeller.identity()}",
            highlight=False,
        )
        self.log: RoundLog | None = None

    def source(self, trainer: Trainer) -> OnPolicySource:
        config, parts = self.parts.config, self.parts
        s = config.sampling
        sampling = SamplingConfig(
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            max_new_tokens=s.max_new_tokens,
            batch_size=config.eval.batch_size,
        )
        # each round scored once against the training reference (its KL too), else the adapters switched off
        reference = self.train_reference or (
            AdapterDisabledReference(self.model, chunk_size=config.logit_chunk) if config.lora.enabled else None
        )
        sampler = online_sampler(config, parts.tokenizer, trainer.accelerator, parts.say)
        return OnPolicySource(
            trainer,
            parts.tokenizer,
            self.prompts,
            self.prompt_ids,
            self.labeller,
            self.settings,
            sampling,
            parts.batcher,
            parts.inputs.train,
            reference,
            sampler=sampler,
        )

    def hooks(self, stage_dir: Path, checkpoints: Checkpoints) -> list[Hook]:
        """The rounds' log and files, then a checkpoint at each round's end (after the log, so that the
        checkpoint holds the round as reported)."""
        main = self.parts.accelerator.is_main_process
        self.log = RoundLog(RoundFiles(stage_dir) if main else None, self.parts.console)
        return [self.log, RoundCheckpoints(checkpoints)]

    def record(self, stage_dir: Path) -> dict[str, Any]:
        rounds = self.log.rounds if self.log is not None else []
        return {"rounds": [s.to_dict() for s in rounds], "round_samples": _last_samples(stage_dir / SAMPLES_FILE)}


class RoundFiles:
    """Writes ``rounds.jsonl`` (every finished round) and ``round_samples.jsonl`` (each round's best
    and worst samples of a few prompts) in the stage folder, atomically, as each round finishes."""

    def __init__(self, stage_dir: Path) -> None:
        self.stage_dir = stage_dir

    def __call__(self, stats: RoundStats, rounds: list[RoundStats], shown: list[dict[str, Any]]) -> None:
        write_atomic(self.stage_dir / ROUNDS_FILE, "".join(json.dumps(s.to_dict()) + "\n" for s in rounds))
        _append_samples(self.stage_dir / SAMPLES_FILE, shown)


def _append_samples(path: Path, shown: list[dict[str, Any]]) -> None:
    """The round's shown samples added to ``round_samples.jsonl`` (rewritten atomically; a round
    written again after a resume replaces its earlier lines)."""
    rounds = {row["round"] for row in shown}
    old = [
        line
        for line in (path.read_text(encoding="utf-8").splitlines() if path.exists() else [])
        if json.loads(line)["round"] not in rounds
    ]
    new = [json.dumps(row, ensure_ascii=False) for row in shown]
    write_atomic(path, "".join(line + "\n" for line in old + new))


def _last_samples(path: Path) -> list[dict[str, Any]]:
    """The last round's shown samples."""
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []
    last = max((row["round"] for row in rows), default=None)
    return [row for row in rows if row["round"] == last]
