"""Refusing an impossible run before anything is loaded: one clear line naming the config key.

:func:`check` reads only the config and the file system (no model, no data rows), so a typo
costs the user nothing: every number is range-checked, every choice compared with its list,
every stage's objective built, the trackers found installed and the output folder found
writable. Checks that need the data (columns, rows) follow in :mod:`preftune.run.inputs`,
still before any model loads.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from preftune.data.batcher import LAYOUTS
from preftune.data.ranked import PAIRINGS
from preftune.errors import PreftuneError, SpecError
from preftune.files import unwritable_reason
from preftune.modeling.loading import DTYPES
from preftune.modeling.lora_targets import parse_target_modules
from preftune.objectives import GroupRecord, Objective, build
from preftune.run.config import RunConfig, resolve_defaults
from preftune.training.accelerator import sharded_launch_refusal
from preftune.training.settings import REFRESH_MODES
from preftune.training.sharding import requested_sharding, sharding_refusal

REFERENCE_CHOICES = ("auto", "adapter", "copy", "precomputed", "previous")
MIXED_PRECISION = ("auto", "no", "bf16", "fp16")
# transformers schedulers that need nothing beyond warm-up and total steps
SCHEDULES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
)
SPLIT_BY = ("prompt", "pair")


def check(config: RunConfig) -> list[Objective]:
    """Refuse impossible settings with one clear line, before any model or data is loaded; return the
    stages' objectives (``config.resolved_stages()``'s order), built here once for the whole run."""
    resolve_defaults(config)
    _check_numbers(config)
    _check_choices(config)
    objectives = _check_stages(config)
    _check_online(config, objectives)
    _check_mismatched(config, objectives)
    _check_refresh(config, objectives)
    _check_win_rates(config)
    check_trackers(config.trackers)
    check_output_dir(Path(config.output_dir))
    if reason := sharded_launch_refusal():
        raise PreftuneError(reason)
    _check_sharding(config)
    return objectives


def _require(key: str, value: float | None, low: float, *, strict: bool = False, high: float | None = None) -> None:
    """``value`` must be finite and >= ``low`` (> with ``strict``), and < ``high`` when given."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SpecError(f"{key} must be a finite number, got {value!r}")
    if value < low or (strict and value == low) or (high is not None and value >= high):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise SpecError(f"{key} must be {bound}{f' and < {high:g}' if high is not None else ''}, got {value}")


def _check_numbers(config: RunConfig) -> None:
    o, d, e, lora = config.optim, config.data, config.eval, config.lora
    for key, value in {"optim.lr": o.lr, "optim.max_grad_norm": o.max_grad_norm}.items():
        _require(key, value, 0, strict=True)
    _require("optim.epochs", o.epochs, 0, strict=True)
    _require("optim.warmup_ratio", o.warmup_ratio, 0, high=1)
    _require("optim.weight_decay", o.weight_decay, 0)
    at_least_one = {
        "optim.batch_size": o.batch_size,
        "optim.grad_accumulation": o.grad_accumulation,
        "optim.max_steps": o.max_steps,
        "optim.max_bad_steps": o.max_bad_steps,
        "data.train_size": d.train_size,
        "data.max_prompt_length": d.max_prompt_length,
        "eval.batch_size": e.batch_size,
        "eval.max_new_tokens": e.max_new_tokens,
        "logit_chunk": config.logit_chunk,
        "save_every": config.save_every,
        "keep_checkpoints": config.keep_checkpoints,
        "eval.gradient_cosine_pairs": e.gradient_cosine_pairs,
    }
    for key, value in at_least_one.items():
        _require(key, value, 1)
    zero_or_more = {
        "data.eval_size": 0 if d.eval_size is None else d.eval_size,
        "eval.every": e.every,
        "eval.samples": e.samples,
        "eval.win_rate_every": e.win_rate_every,
        "eval.gradient_cosine_every": e.gradient_cosine_every,
    }
    for key, value in zero_or_more.items():
        _require(key, value, 0)
    _require("data.max_length", d.max_length, 2)
    _require("data.group_size", d.group_size, 2)
    _require("data.score_gap", d.score_gap, 0)
    if d.max_prompt_length is not None and d.max_prompt_length >= d.max_length:
        raise SpecError(
            f"data.max_prompt_length {d.max_prompt_length} leaves no room for a response in "
            f"data.max_length {d.max_length}: make it smaller"
        )
    if o.batch_size % o.grad_accumulation:
        raise SpecError(
            f"optim.batch_size {o.batch_size} is not a multiple of optim.grad_accumulation {o.grad_accumulation}"
        )
    if lora.enabled:
        _require("lora.rank", lora.rank, 1)
        _require("lora.alpha", lora.alpha, 0, strict=True)
        _require("lora.dropout", lora.dropout, 0, high=1)
        _require("lora.last_layers", lora.last_layers, 1)


def _choice(key: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise SpecError(f"{key} must be one of {', '.join(choices)}, got {value!r}")


def _check_choices(config: RunConfig) -> None:
    _choice("optim.mixed_precision", config.optim.mixed_precision, MIXED_PRECISION)
    _choice("optim.schedule", config.optim.schedule, SCHEDULES)
    _choice("model.dtype", config.model.dtype, DTYPES)
    _choice("data.layout", config.data.layout, LAYOUTS)
    _choice("data.pairing", config.data.pairing, PAIRINGS)
    _choice("data.split_by", config.data.split_by, SPLIT_BY)
    if config.lora.enabled:
        parse_target_modules(config.lora.target_modules)  # the form; the names need the model
    if not str(config.model.name).strip():
        raise SpecError("model.name is empty")
    if config.data.eval and config.data.eval == config.data.train:
        raise SpecError("data.eval is the training data itself: leave it unset to hold out data.eval_size pairs")


def _check_stages(config: RunConfig) -> list[Objective]:
    stages = config.resolved_stages()
    names = [stage.name for stage in stages]
    objectives = [build(stage.objective) for stage in stages]
    for index, stage in enumerate(stages):
        where = f"stage '{stage.name}'" if config.stages else "objective"
        if config.stages and (not stage.name or Path(stage.name).name != stage.name or stage.name in (".", "..")):
            raise SpecError(f"stages.{index}.name must be a plain folder name, got {stage.name!r}")
        if stage.name in names[:index]:
            raise SpecError(f"stages.{index}.name '{stage.name}' is used by two stages: each needs its own folder")
        _require(f"stages.{index}.lr", stage.lr, 0, strict=True)
        _require(f"stages.{index}.epochs", stage.epochs, 0, strict=True)
        _require(f"stages.{index}.max_steps", stage.max_steps, 1)
        _check_data_kind(config, objectives, index, where)
        _choice(f"{where}: reference", stage.reference, REFERENCE_CHOICES)
        if stage.reference == "previous" and index == 0:
            raise SpecError(f"{where}: reference 'previous' needs an earlier stage")
        if stage.reference == "adapter" and not config.lora.enabled:
            raise SpecError(f"{where}: reference 'adapter' needs LoRA (lora.enabled=true)")
        if stage.reference == "precomputed" and objectives[index].needs_reference_tokens:
            raise SpecError(
                f"{where}: ld_alpha < 1 reads the reference's per-token log-probs, which a precomputed reference "
                "does not hold: use reference=auto, adapter or copy"
            )
    return objectives


def _check_win_rates(config: RunConfig) -> None:
    """``eval.judges``: each judge's form, a baseline, and held-out prompts to answer."""
    e = config.eval
    if not e.judges:
        return
    from preftune.evaluation.generate_eval import check_judge_spec
    from preftune.training.win_rates import WIN_RATE_BASELINES

    _choice("eval.baseline", e.baseline, WIN_RATE_BASELINES)
    _require("eval.win_rate_prompts", e.win_rate_prompts, 1)
    for spec in e.judges:
        try:
            check_judge_spec(str(spec), "eval.judges:")
        except PreftuneError as err:
            raise SpecError(str(err)) from None
    if not config.data.eval and config.data.eval_size == 0:
        raise SpecError("eval.judges needs held-out prompts: set data.eval_size > 0 or data.eval")


def _check_online(config: RunConfig, objectives: list[Objective]) -> None:
    """An on-policy run: one stage, a reference the policy's samples can be scored against, valid knobs."""
    online, sampling = config.online, config.sampling
    _require("online.rounds", online.rounds, 0)
    if not online.rounds:
        return
    from preftune.run.online import online_settings

    _require("sampling.n", sampling.n, 2)  # rewards compare a prompt's responses
    online_settings(config)  # its own checks of the loop's knobs
    _require("sampling.temperature", sampling.temperature, 0)
    _require("sampling.max_new_tokens", sampling.max_new_tokens, 1)
    if len(config.resolved_stages()) > 1:
        raise SpecError("online.rounds trains one objective: use the top-level objective, not stages")
    if config.resolved_stages()[0].reference in ("precomputed", "previous"):
        raise SpecError("an on-policy run scores new samples each round: reference must be auto, adapter or copy")
    if config.data.bad:
        raise SpecError("online.rounds samples its own responses: data.bad (an unpaired bad set) does not apply")
    if online.mix > 0 and objectives[0].record_type is GroupRecord:
        raise SpecError("online.mix blends offline *pairs* in: it needs a pairwise objective, not a group one")
    from preftune.generation.copy_sampler import SAMPLE_DTYPES
    from preftune.generation.vllm_backend import BACKENDS, colocate_missing

    _choice("sampling.backend", sampling.backend, BACKENDS)
    _choice("sampling.dtype", sampling.dtype, SAMPLE_DTYPES)
    _require("sampling.vllm_gpu_memory", sampling.vllm_gpu_memory, 0, strict=True, high=1)
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; the run's processes are not made yet
    if sampling.backend == "vllm" and (reason := colocate_missing(config.model.name, processes)):
        raise SpecError(f"sampling.backend=vllm cannot sample here: {reason}; use sampling.backend=hf (or auto)")


def _check_data_kind(config: RunConfig, objectives: list[Objective], index: int, where: str) -> None:
    """Group terms read ranked groups, pairwise terms pairs: each stage's objective must fit the run's data."""
    objective, spec = objectives[index], config.resolved_stages()[index].objective
    groups = objective.record_type is GroupRecord
    if config.online.rounds:  # data.train gives prompts (and offline pairs): any objective fits
        return
    if config.data.bad:
        if groups or not objective.fits_unpaired:
            raise SpecError(
                f"{where}: '{spec}' compares a chosen and a rejected response of one prompt, and data.bad gives "
                "unpaired examples: use mle, ul, mate, exmate, kto (or bcr, dpop, or a term that scores each "
                "response alone: bco_pair, nca_pair, sppo_hard, apo_zero, aot_unpaired), or pairs without data.bad"
            )
    kinds = {o.record_type is GroupRecord for o in objectives}
    if len(kinds) > 1:
        raise SpecError(
            "stages mix group objectives (reinforce, rwr, bon, bon_neg) with pairwise ones: "
            "they read different data (ranked groups vs pairs); run them separately"
        )
    if config.data.group_size is not None and not groups:
        raise SpecError(f"data.group_size is for group objectives (reinforce, rwr, bon, bon_neg), not '{spec}'")


def _check_mismatched(config: RunConfig, objectives: list[Objective]) -> None:
    """``kto`` scores each micro-batch's mismatched pairs live: offline, a live reference, two examples or more."""
    for objective, stage in zip(objectives, config.resolved_stages(), strict=True):
        if not objective.needs_mismatched:
            continue
        where = f"stage '{stage.name}'" if config.stages else "objective"
        if config.online.rounds:
            raise SpecError(
                f"{where}: '{objective}' estimates its KL from each batch's mismatched pairs, which an on-policy "
                "round's reference (scored once per round) cannot score: train it offline"
            )
        if stage.reference == "precomputed":
            raise SpecError(
                f"{where}: '{objective}' scores each batch's mismatched pairs, which a precomputed reference does "
                "not hold: use reference=auto, adapter or copy"
            )
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's; the run's processes are not made yet
        micro = config.optim.batch_size // max(1, processes * config.optim.grad_accumulation)
        if micro < 2:
            raise SpecError(
                f"{where}: '{objective}' pairs each prompt with another example's response, so a micro-batch needs "
                f"2 examples or more; optim.batch_size / (processes x optim.grad_accumulation) is {micro}"
            )


def _check_sharding(config: RunConfig) -> None:
    """An FSDP launch (:mod:`preftune.training.sharding`): its config's settings, and the parts of a run
    that need every process's whole gradients or a second model moved in step, refused."""
    if reason := sharding_refusal():
        raise PreftuneError(reason)
    if requested_sharding() is None:
        return
    where = "accelerate launch asked for FSDP, which"
    if len(config.resolved_stages()) > 1:
        raise SpecError(f"{where} trains one stage: run each stage of 'stages' as a run of its own")
    if config.ref_refresh.enabled:
        raise SpecError(f"{where} cannot move a reference copy in step with the shards: drop ref_refresh")
    if config.eval.gradient_cosine_every:
        raise SpecError(
            f"{where} exchanges gradients in every backward, and the per-pair gradient cosines take one backward "
            "per held-out pair on each process's share: set eval.gradient_cosine_every=0"
        )
    if config.optim.mixed_precision == "fp16":
        raise SpecError(f"{where} does not scale fp16 gradients: use optim.mixed_precision=bf16 or no")


def _check_refresh(config: RunConfig, objectives: list[Objective]) -> None:
    """``ref_refresh`` (TR-DPO) moves a reference copy: refused where there is none to move."""
    refresh = config.ref_refresh
    _choice("ref_refresh.mode", refresh.mode, REFRESH_MODES)
    _require("ref_refresh.alpha", refresh.alpha, 0, strict=True)
    if refresh.alpha > 1:
        raise SpecError(f"ref_refresh.alpha must be in (0, 1], got {refresh.alpha}")
    _require("ref_refresh.every", refresh.every, 1)
    if not refresh.enabled:
        return
    if config.online.rounds:
        raise SpecError("ref_refresh: an on-policy run scores each round's reference once, when sampled: train offline")
    if refresh.mode == "soft" and config.lora.enabled:
        raise SpecError(
            "ref_refresh.mode=soft under LoRA would mix the adapters' A and B factors, not their product BA: "
            "use ref_refresh.mode=hard or lora.enabled=false"
        )
    for objective, stage in zip(objectives, config.resolved_stages(), strict=True):
        where = f"stage '{stage.name}'" if config.stages else "objective"
        if not objective.needs_reference:
            raise SpecError(f"ref_refresh: {where} '{objective}' reads no reference, so there is none to refresh")
        if stage.reference in ("adapter", "precomputed"):
            what = "the policy with its adapters off" if stage.reference == "adapter" else "fixed log-probs"
            raise SpecError(
                f"ref_refresh: reference '{stage.reference}' ({where}) is {what}, which cannot be refreshed: "
                "use reference=copy (or auto)"
            )


def check_trackers(trackers: list[str]) -> None:
    """Each tracker must be one accelerate knows, and installed: a missing one would log nothing, silently."""
    import importlib.util

    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    known = sorted(LOGGER_TYPE_TO_CLASS)
    for name in trackers:
        if name not in LOGGER_TYPE_TO_CLASS:
            import difflib

            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise SpecError(f"trackers: unknown tracker '{name}'; {hint}(known: {', '.join(known)})")
        module = "torch.utils.tensorboard" if name == "tensorboard" else name
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise SpecError(f"trackers: '{name}' is not installed (pip install {name}), or drop it from trackers")


def check_output_dir(path: Path) -> None:
    """The output folder must be a folder (or creatable as one) that this user can write to."""
    if path.exists() and not path.is_dir():
        raise SpecError(f"output_dir {path} is a file, not a folder")
    if reason := unwritable_reason(path):
        raise SpecError(f"output_dir {path}: {reason}")
