"""A training run read top to bottom: config -> data -> model -> stages -> outputs.

Every check that can fail runs before the first optimiser step, and every check that needs no
model runs before anything is loaded or converted: the config (:mod:`preftune.run.checks`),
what ``--resume`` may continue (:mod:`preftune.run.resume`), then the data rows and the
held-out split (:mod:`preftune.run.inputs`). A run refused on bad input leaves nothing in
``output_dir``. Each stage trains with its own objective; a later stage starts from the earlier
one's result and, with ``reference: previous`` (or ``auto``), uses it as the reference (P1's
sequential DPO+ExMATE).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed
from rich.console import Console

from preftune.data import Batcher
from preftune.errors import PreftuneError
from preftune.evaluation.statistical import gain_verdict
from preftune.files import write_json_atomic
from preftune.generation import greedy_responses
from preftune.modeling import (
    apply_chat_template_setting,
    check_chat_template,
    check_lora_targets,
    enable_gradient_checkpointing,
    load_model,
    load_tokenizer,
)
from preftune.modeling.attention import attention_length
from preftune.objectives import Objective
from preftune.run.checks import check
from preftune.run.config import RunConfig, to_dict
from preftune.run.inputs import (
    HELD_OUT_FILE,
    Examples,
    Inputs,
    data_kind,
    load_examples,
    save_held_out,
    tokenize_inputs,
)
from preftune.run.outputs import load_stage_result
from preftune.run.resume import (
    CONFIG_FILE,
    DONE_FILE,
    INPUTS_FILE,
    check_resumable,
    check_same_inputs,
    has_progress,
    inputs_record,
    stage_dirs,
)
from preftune.run.stage import RunParts, train_stage
from preftune.run.summary import print_outcome, write_summary
from preftune.training import StepCallback, latest_checkpoint, make_accelerator
from preftune.training.sharding import layer_classes, requested_sharding


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


def _mixed_precision(setting: str) -> str:
    """``optim.mixed_precision`` as accelerate takes it: ``auto`` is bf16 where the hardware multiplies
    bf16 natively (a capable CUDA GPU, or a CPU with AMX / AVX-512 BF16), else ``no``. Under bf16
    autocast only the products run in bf16: the weights (the optimiser's master copy) stay float32."""
    if setting != "auto":
        return setting
    from preftune.modeling import precision  # the module, so tests can substitute its answer

    return precision.auto_mixed_precision()


def _accelerator(config: RunConfig) -> Accelerator:
    """The run's accelerator: its precision, its trackers writing into ``output_dir``."""
    return make_accelerator(
        _mixed_precision(config.optim.mixed_precision), trackers=config.trackers, project_dir=config.output_dir
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
    rounds = None
    if config.online.rounds:  # a bad labeller, a missing reward model or no prompt that fits: before the policy
        from preftune.run.online import round_inputs

        rounds = round_inputs(config, examples.train, tokenizer)
    if config.eval.judges and not inputs.held_out_examples:  # an unset data.eval_size holds out none of < 10
        raise PreftuneError(
            "eval.judges needs held-out prompts, and none were held out: set data.eval_size > 0 or data.eval"
        )
    judges = _win_rate_judges(config)
    model = _model(config)
    sharding = requested_sharding()
    if sharding is not None:  # layer classes that name no module: refused before any reference or step
        layer_classes(model, sharding)
    accelerator = _accelerator(config)
    set_seed(config.optim.seed)
    batcher = Batcher(tokenizer.pad_token_id, config.data.layout, attention_length(model), config.data.max_length)
    dirs = stage_dirs(output_dir, [s.name for s in config.resolved_stages()])
    parts = RunParts(
        config,
        tokenizer,
        examples,
        inputs,
        batcher,
        accelerator,
        console,
        dirs,
        callbacks,
        rounds,
        judges,
        sharding,
    )
    _start(parts)
    sample_prompts = [p.prompt_ids for p in inputs.held_out[: config.eval.samples]]
    samples_before = greedy_responses(model, tokenizer, sample_prompts, config.eval.max_new_tokens)
    model, outcome = _train_stages(parts, objectives, model)
    samples_after = greedy_responses(model, tokenizer, sample_prompts, config.eval.max_new_tokens)
    outcome["samples"] = [
        {"prompt": tokenizer.decode(p), "before": b, "after": a}
        for p, b, a in zip(sample_prompts, samples_before, samples_after, strict=True)
    ]
    outcome["seconds"] = time.perf_counter() - began
    outcome["verdicts"] = _verdicts(outcome["stages"])
    if accelerator.is_main_process:
        _report(outcome, config, inputs, console)
    return outcome


def _start(parts: RunParts) -> None:
    """What the run is, written before its first step (main process; all wait), and said."""
    config, inputs, accelerator = parts.config, parts.inputs, parts.accelerator
    if accelerator.is_main_process:
        _write_run_record(config, inputs, Path(config.output_dir))
    accelerator.wait_for_everyone()
    for split, summary in inputs.summaries.items():
        if summary is not None:
            parts.say(f"{split} data: {summary}", highlight=False)
    precision = f"{accelerator.mixed_precision} (optim.mixed_precision={config.optim.mixed_precision})"
    parts.say(f"precision: {precision}", highlight=False)


def _train_stages(parts: RunParts, objectives: Sequence[Objective], model: Any) -> tuple[Any, dict[str, Any]]:
    """Every stage in turn, each from the earlier one's result (a finished stage of a resumed run is
    loaded, not trained again); the final model and the run's outcome so far."""
    config, dirs = parts.config, parts.dirs
    outcome: dict[str, Any] = {"stages": [], "mixed_precision": parts.accelerator.mixed_precision}
    for index, stage in enumerate(config.resolved_stages()):
        if index > 0 and config.lora.enabled:
            model = model.merge_and_unload()  # bake the earlier stage in: it is this stage's base
        if config.resume and (dirs[index] / DONE_FILE).exists():
            parts.say(f"stage '{stage.name}': already finished, loading its result")
            model = load_stage_result(model, dirs[index], config)
            outcome["stages"].append(json.loads((dirs[index] / DONE_FILE).read_text(encoding="utf-8")))
            continue
        model, record = train_stage(parts, index, stage, objectives[index], model)
        outcome["stages"].append(record)
    parts.accelerator.end_training()
    return model, outcome


def _win_rate_judges(config: RunConfig) -> list[tuple[str, Any]]:
    """``eval.judges``, built before the policy loads (a bad api: setting stops the run first)."""
    from preftune.judging.specs import make_judge

    return [(str(spec), make_judge(str(spec))) for spec in config.eval.judges]


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
