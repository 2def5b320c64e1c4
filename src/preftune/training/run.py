"""A training run read top to bottom: config -> data -> model -> stages -> outputs.

Every check that can fail runs before the first optimiser step, and every check that needs no
model runs before anything is loaded or converted: the config (:mod:`preftune.training.checks`),
what ``--resume`` may continue (:mod:`preftune.training.resume`), then the data rows and the
held-out split (:mod:`preftune.training.inputs`). A run refused on bad input leaves nothing in
``output_dir``. Each stage trains with its own objective; a later stage starts from the earlier
one's result and, with ``reference: previous`` (or ``auto``), uses it as the reference (P1's
sequential DPO+ExMATE).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import set_seed
from rich.console import Console

from preftune.data import Batcher
from preftune.errors import PreftuneError
from preftune.evaluation.statistical import gain_verdict
from preftune.generation import greedy_responses
from preftune.modeling import (
    apply_chat_template_setting,
    apply_lora,
    check_chat_template,
    check_lora_targets,
    enable_gradient_checkpointing,
    load_model,
    load_tokenizer,
)  # fmt: skip
from preftune.modeling.attention import attention_length
from preftune.objectives import Objective
from preftune.training.checkpoint import latest_checkpoint, write_json_atomic
from preftune.training.checks import check
from preftune.training.config import RunConfig, StageConfig, to_dict
from preftune.training.gradient_cosine_hook import gradient_cosine_hooks
from preftune.training.hooks import (
    Callbacks,
    Checkpoints,
    HeldOutEvaluation,
    Logging,
    Progress,
    StepCallback,
    StopOnNonFinite,
)  # fmt: skip
from preftune.training.inputs import (
    HELD_OUT_FILE,
    Examples,
    Inputs,
    data_kind,
    load_examples,
    save_held_out,
    tokenize_inputs,
)  # fmt: skip
from preftune.training.loop import Trainer, make_plan, responses_read
from preftune.training.outputs import finish_stage, load_stage_result
from preftune.training.references import make_reference
from preftune.training.resume import (
    CONFIG_FILE,
    DONE_FILE,
    INPUTS_FILE,
    check_resumable,
    check_same_inputs,
    has_progress,
    inputs_record,
    stage_dirs,
)  # fmt: skip
from preftune.training.sources import DatasetSource
from preftune.training.stage_setup import resume_hint, start_trackers
from preftune.training.summary import print_outcome, write_summary


def _refuse_earlier_run(config: RunConfig, output_dir: Path) -> None:
    """Without ``resume``, an output folder with checkpoints is refused before anything in it is rewritten;
    with it, a folder with nothing to resume or a changed config is refused."""
    names = [stage.name for stage in config.resolved_stages()]
    if config.resume:
        check_resumable(output_dir, names, to_dict(config))
    elif has_progress(output_dir, names):
        where = next(d for d in stage_dirs(output_dir, names) if latest_checkpoint(d) or (d / DONE_FILE).exists())
        raise PreftuneError(
            f"{where} holds checkpoints of an earlier run: resume it with --resume, or choose another output_dir"
        )


def _stage_optim(config: RunConfig, stage: StageConfig):
    optim = config.optim
    updates = {k: getattr(stage, k) for k in ("lr", "epochs", "max_steps") if getattr(stage, k) is not None}
    return replace(optim, **updates) if updates else optim


def _mixed_precision(setting: str) -> str:
    """``optim.mixed_precision`` as accelerate takes it: ``auto`` is bf16 where the hardware multiplies
    bf16 natively (a capable CUDA GPU, or a CPU with AMX / AVX-512 BF16), else ``no``. Under bf16
    autocast only the products run in bf16: the weights (the optimiser's master copy) stay float32."""
    if setting != "auto":
        return setting
    from preftune.modeling import precision  # the module, so tests can substitute its answer

    return precision.auto_mixed_precision()


def _accelerator(config: RunConfig) -> Accelerator:
    # accelerate keeps one process-wide state; a run sets its own precision and device, so a state
    # left by earlier work in this process (another run, a TRL trainer) is dropped first. The
    # distributed part (PartialState: ranks, process group) is kept.
    AcceleratorState._reset_state()
    return Accelerator(
        # Several processes (torchrun) and no accelerator: accelerate needs cpu=True to join them with
        # gloo; without it each process trains alone, all of them writing into the same output_dir.
        cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available(),
        mixed_precision=_mixed_precision(config.optim.mixed_precision),
        log_with=config.trackers or None,
        project_dir=str(config.output_dir),
    )


def _tokenizer(config: RunConfig, examples: Examples) -> Any:
    """The model's tokenizer, with ``model.chat_template`` applied; one is needed for conversational data."""
    tokenizer = load_tokenizer(config.model.name)
    apply_chat_template_setting(tokenizer, config.model.chat_template)
    if any(e.is_conversational for e in (*examples.train, *examples.held_out)):
        check_chat_template(tokenizer, config.model.name)
    return tokenizer


def _model(config: RunConfig) -> Any:
    """The model to train, its LoRA targets checked before anything is written."""
    model = load_model(config.model.name, dtype=config.model.dtype)
    model.config.use_cache = False
    if config.lora.enabled:
        check_lora_targets(model, config.lora.target_modules, config.lora.last_layers)
    if config.model.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def _write_run_record(config: RunConfig, inputs: Inputs, output_dir: Path) -> None:
    """What a run is, written before its first step: config, data fingerprints and summary, held-out pairs."""
    output_dir.mkdir(parents=True, exist_ok=True)
    summaries = {k: v.to_dict() if v else None for k, v in inputs.summaries.items()}
    write_json_atomic(output_dir / "data_summary.json", summaries)
    write_json_atomic(output_dir / CONFIG_FILE, to_dict(config))
    write_json_atomic(output_dir / INPUTS_FILE, inputs_record(inputs.train, inputs.held_out))
    if inputs.held_out_examples:
        save_held_out(inputs.held_out_examples, output_dir / HELD_OUT_FILE)


def run_training(config: RunConfig, callbacks: Sequence[StepCallback] = (), console: Console | None = None) -> dict:
    """Train every stage of ``config``; return the final held-out metrics and where things are."""
    objectives = check(config)  # the config's objects, built once: each stage's objective
    console = console or Console(stderr=True, soft_wrap=True)
    output_dir = Path(config.output_dir)
    _refuse_earlier_run(config, output_dir)
    examples = load_examples(config.data, data_kind(config, objectives))  # rows validated and split: no model yet
    began = time.perf_counter()
    tokenizer = _tokenizer(config, examples)
    inputs = tokenize_inputs(examples, tokenizer, config.data)
    if config.resume:
        check_same_inputs(output_dir, inputs_record(inputs.train, inputs.held_out))
    labeller = None
    if config.online.rounds:  # a bad labeller (or a missing reward model) stops the run before the policy loads
        from preftune.judging.labellers import make_labeller

        labeller = make_labeller(config.online.labeller)
    judges = _win_rate_judges(config)
    model = _model(config)
    accelerator = _accelerator(config)
    main = accelerator.is_main_process
    say = console.print if main else (lambda *a, **k: None)
    set_seed(config.optim.seed)
    if main:
        _write_run_record(config, inputs, output_dir)
    accelerator.wait_for_everyone()
    for split, summary in inputs.summaries.items():
        if summary is not None:
            say(f"{split} data: {summary}", highlight=False)
    say(
        f"precision: {accelerator.mixed_precision} (optim.mixed_precision={config.optim.mixed_precision})",
        highlight=False,
    )

    batcher = Batcher(tokenizer.pad_token_id, config.data.layout, attention_length(model))
    sample_prompts = [p.prompt_ids for p in inputs.held_out[: config.eval.samples]]
    samples_before = greedy_responses(model, tokenizer, sample_prompts, config.eval.max_new_tokens)
    outcome: dict[str, Any] = {"stages": [], "mixed_precision": accelerator.mixed_precision}
    stages = config.resolved_stages()
    dirs = stage_dirs(output_dir, [s.name for s in stages])
    for index, stage in enumerate(stages):
        if index > 0 and config.lora.enabled:
            model = model.merge_and_unload()  # bake the earlier stage in: it is this stage's base
        if config.resume and (dirs[index] / DONE_FILE).exists():
            say(f"stage '{stage.name}': already finished, loading its result")
            model = load_stage_result(model, dirs[index], config)
            outcome["stages"].append(json.loads((dirs[index] / DONE_FILE).read_text(encoding="utf-8")))
            continue
        win_rates = _win_rate_hook(judges, config, inputs, tokenizer, dirs[index], console)
        if config.online.rounds:
            from preftune.training.online_run import run_online_stage

            model, record = run_online_stage(config, stage, objectives[index], dirs[index], model, tokenizer,
                                             examples.train, inputs, batcher, accelerator, console, callbacks,
                                             labeller, win_rates)  # fmt: skip
        else:
            model, record = _run_stage(config, stage, objectives[index], index, dirs, model, tokenizer, inputs,
                                       batcher, accelerator, console, callbacks, win_rates)  # fmt: skip
        outcome["stages"].append(record)
    accelerator.end_training()

    samples_after = greedy_responses(model, tokenizer, sample_prompts, config.eval.max_new_tokens)
    outcome["samples"] = [
        {"prompt": tokenizer.decode(p), "before": b, "after": a}
        for p, b, a in zip(sample_prompts, samples_before, samples_after, strict=True)
    ]
    outcome["seconds"] = time.perf_counter() - began
    outcome["verdicts"] = _verdicts(outcome["stages"])
    if main:
        _report(outcome, config, inputs, console)
    return outcome


def _win_rate_judges(config: RunConfig) -> list[tuple[str, Any]]:
    """``eval.judges``, built before the policy loads (a bad api: setting stops the run first)."""
    from preftune.judging.specs import make_judge

    return [(str(spec), make_judge(str(spec))) for spec in config.eval.judges]


def _win_rate_hook(judges: list[tuple[str, Any]], config: RunConfig, inputs: Inputs, tokenizer: Any,
                   stage_dir: Path, console: Console) -> Any:  # fmt: skip
    """The stage's periodic win rates (:mod:`preftune.training.win_rates`), or None without ``eval.judges``."""
    if not judges:
        return None
    from preftune.training.win_rates import WinRateEvaluation

    return WinRateEvaluation(inputs.held_out_examples, tokenizer, judges, config.eval, Path(config.output_dir),
                             stage_dir, console)  # fmt: skip


def _verdicts(stages: list[dict[str, Any]]) -> list[str]:
    """Whether held-out accuracy and margin gained more than two standard errors, first stage's start
    to last stage's end."""
    first, last = stages[0], stages[-1]
    lines = (gain_verdict(name, first.get("eval_before"), last.get("eval_after")) for name in ("accuracy", "margin"))
    return [line for line in lines if line is not None]


def _report(outcome: dict[str, Any], config: RunConfig, inputs: Inputs, console: Console) -> None:
    """``outcome.json``, ``summary.md`` and the console's last words (main process only)."""
    output_dir = Path(config.output_dir)
    write_json_atomic(output_dir / "outcome.json", outcome)
    write_summary(output_dir, config, outcome, inputs.summaries)
    print_outcome(console, outcome, output_dir)


def _run_stage(
    config: RunConfig,
    stage: StageConfig,
    objective: Objective,
    index: int,
    dirs: list[Path],
    model: Any,
    tokenizer: Any,
    inputs: Inputs,
    batcher: Batcher,
    accelerator: Accelerator,
    console: Console,
    callbacks: Sequence[StepCallback],
    win_rates: Any = None,
) -> tuple[Any, dict[str, Any]]:
    """Train one stage from ``model`` (the earlier stage's result); return the trained model and its record.
    ``win_rates``: the stage's :class:`~preftune.training.win_rates.WinRateEvaluation`, if any."""
    main = accelerator.is_main_process
    say = console.print if main else (lambda *a, **k: None)
    if config.lora.enabled:
        lora = config.lora
        model = apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                           target_modules=lora.target_modules, last_layers=lora.last_layers)  # fmt: skip
    optim = _stage_optim(config, stage)
    say(f"stage '{stage.name}': {objective.describe()}", highlight=False)
    t0 = time.perf_counter()
    plan = make_plan(inputs.train, optim, accelerator.num_processes, config.data.group_by_length)
    total = plan.total_steps(optim.epochs, optim.max_steps)
    read, group_size = plan.indices_read(total), responses_read(objective)
    train_ref, eval_ref = make_reference(stage.reference, objective, model, config, inputs.train, inputs.held_out,
                                         batcher, accelerator, read, group_size, plan.first_reads(total))  # fmt: skip
    say(f"reference ({stage.reference}): ready in {time.perf_counter() - t0:.1f} s "
        f"({len(read)} of {len(inputs.train)} training examples read by this stage)", highlight=False)  # fmt: skip
    start_trackers(accelerator, config, stage)
    trainer = Trainer(accelerator=accelerator, model=model, objective=objective, optim=optim, total_steps=total,
                      reference=train_ref, logit_chunk=config.logit_chunk)  # fmt: skip
    source = DatasetSource(inputs.train, batcher, plan, total, rank=accelerator.process_index,
                           group_size=group_size, device=accelerator.device)  # fmt: skip
    checkpoints = Checkpoints(dirs[index], config.save_every, config.keep_checkpoints, total)
    hooks = [StopOnNonFinite(optim.max_bad_steps, checkpoints), Logging(), Progress(console),
             HeldOutEvaluation(inputs.held_out, eval_ref, batcher, config.eval, console),
             *([win_rates] if win_rates is not None else []),
             *gradient_cosine_hooks(inputs.held_out, batcher, config.eval, console),
             checkpoints, Callbacks(callbacks)]  # fmt: skip
    result = _fit(trainer, source, hooks, dirs[index], config.resume, f"stage '{stage.name}'", say)
    base_dir = dirs[index - 1] / "merged" if index > 0 and config.lora.enabled else None
    later = index + 1 < len(dirs)
    record = finish_stage(stage, dirs[index], result, model, tokenizer, config, accelerator,
                          base_dir=base_dir, later_stage=later)  # fmt: skip
    say(f"stage '{stage.name}': {result.steps} steps in {result.seconds:.0f} s; model in {record['model']}")
    return model, record


def _fit(trainer: Trainer, source: DatasetSource, hooks: list, stage_dir: Path, resume: bool, what: str, say) -> Any:
    """Fit the stage from its newest checkpoint when resuming; on Ctrl-C, say where ``--resume`` continues."""
    saved = latest_checkpoint(stage_dir) if resume else None
    with resume_hint(stage_dir, what, say):
        so_far = trainer.restore(saved, source) if saved is not None else None
        return trainer.fit(source, hooks=hooks, result=so_far)
