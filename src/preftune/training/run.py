"""A training run read top to bottom: config -> data -> model -> stages -> outputs.

Every check that can fail (config, data rows, lengths, model path) runs before the first
optimiser step, so a long run does not crash half-way on bad input. Each stage trains with its
own objective; a later stage starts from the earlier one's result and, with ``reference:
previous`` (or ``auto``), uses it as the reference (P1's sequential DPO+ExMATE).
"""

from __future__ import annotations

import json
import os
import random
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

from preftune.data import Batcher, DataSummary, TokenizedPair, bundled_path, load_preference_data, tokenize_examples
from preftune.errors import PreftuneError
from preftune.evaluation.statistical import MetricSummary, gain_verdict
from preftune.generation import greedy_responses
from preftune.modeling import apply_lora, load_model, load_tokenizer, save_lora
from preftune.modeling.attention import attention_length
from preftune.objectives import build
from preftune.training.checkpoint import latest_checkpoint, write_json_atomic
from preftune.training.config import RunConfig, StageConfig, check, to_dict
from preftune.training.loop import StepCallback, Trainer, TrainResult
from preftune.training.references import make_reference
from preftune.training.report import format_eval_table, plot_curves, write_text_atomic

DONE_FILE = "stage_done.json"


def resolve_source(source: str) -> str:
    """``bundled:NAME`` -> the bundled file; anything else is passed on as is."""
    return str(bundled_path(source.split(":", 1)[1])) if source.startswith("bundled:") else source


def prepare_data(
    config: RunConfig, tokenizer: Any
) -> tuple[list[TokenizedPair], list[TokenizedPair], dict[str, DataSummary | None]]:
    """Load, validate, split and tokenise; return train pairs, held-out pairs and the summaries."""
    d = config.data
    options = {"format": d.format, "columns": d.columns or None, "pairing": d.pairing, "skip_invalid": d.skip_invalid}
    examples, summary = load_preference_data(resolve_source(d.train), **options)
    if d.eval:
        eval_examples, eval_summary = load_preference_data(resolve_source(d.eval), **options)
        train_examples = examples
    else:
        # A fixed shuffle (seed 0, whatever optim.seed is) so every run holds out the same pairs.
        order = list(range(len(examples)))
        random.Random(0).shuffle(order)
        if d.eval_size >= len(examples):
            raise PreftuneError(f"data.eval_size {d.eval_size} leaves no training pairs out of {len(examples)}")
        held = set(order[: d.eval_size])
        eval_examples = [e for i, e in enumerate(examples) if i in held]
        train_examples = [e for i, e in enumerate(examples) if i not in held]
        eval_summary = replace(summary, kept=len(eval_examples)) if d.eval_size else None
    # Without a prompt budget, a long prompt would leave no room and its pair would be dropped:
    # by default the prompt keeps at most half of max_length (cut from the left).
    max_prompt = d.max_prompt_length if d.max_prompt_length is not None else d.max_length // 2
    train_pairs, train_summary = tokenize_examples(train_examples, tokenizer, d.max_length, max_prompt, summary=summary)
    _check_prompt_room(train_examples, tokenizer, d.max_length, train_summary)
    if d.train_size is not None:
        train_pairs = train_pairs[: d.train_size]
    eval_pairs: list[TokenizedPair] = []
    eval_tok: DataSummary | None = None
    if eval_examples:
        eval_pairs, eval_tok = tokenize_examples(
            eval_examples, tokenizer, d.max_length, max_prompt, summary=eval_summary
        )
    summaries = {"train": train_summary, "eval": eval_tok}
    return train_pairs, eval_pairs, summaries


def _check_prompt_room(examples: Sequence[Any], tokenizer: Any, max_length: int, summary: DataSummary) -> None:
    """Refuse a ``max_length`` shorter than every prompt.

    The prompt budget cuts long prompts from the left, so such a run would not fail: it would
    train on prompt ends of a few tokens each, silently. Only when every prompt was cut are the
    untruncated prompt lengths worth computing.
    """
    if not summary.kept or summary.truncated_prompts < summary.kept:
        return

    def prompt_tokens(prompt: Any) -> int:
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
            return len(ids["input_ids"])
        return len(tokenizer(prompt)["input_ids"])

    shortest = min(prompt_tokens(e.prompt) for e in examples)
    if shortest > max_length:
        raise PreftuneError(
            f"data.max_length {max_length} is shorter than every prompt (shortest: {shortest} tokens): raise it"
        )


def _refuse_earlier_run(config: RunConfig, output_dir: Path) -> None:
    """Without ``resume``, an output folder with checkpoints is refused before anything in it is rewritten."""
    if config.resume:
        return
    stages = config.resolved_stages()
    for stage in stages:
        stage_dir = output_dir / stage.name if len(stages) > 1 else output_dir
        if latest_checkpoint(stage_dir) is not None:
            raise PreftuneError(
                f"{stage_dir} holds checkpoints of an earlier run: resume it with --resume, "
                "or choose another output_dir"
            )


def _stage_optim(config: RunConfig, stage: StageConfig):
    optim = config.optim
    updates = {k: getattr(stage, k) for k in ("lr", "epochs", "max_steps") if getattr(stage, k) is not None}
    return replace(optim, **updates) if updates else optim


def _mixed_precision(setting: str) -> str:
    if setting != "auto":
        return setting
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def run_training(config: RunConfig, callbacks: Sequence[StepCallback] = (), console: Console | None = None) -> dict:
    """Train every stage of ``config``; return the final held-out metrics and where things are."""
    check(config)
    console = console or Console(stderr=True)
    output_dir = Path(config.output_dir)
    _refuse_earlier_run(config, output_dir)
    # accelerate keeps one process-wide state; a run sets its own precision and device, so a state
    # left by earlier work in this process (another run, a TRL trainer) is dropped first. The
    # distributed part (PartialState: ranks, process group) is kept.
    AcceleratorState._reset_state()
    accelerator = Accelerator(
        # Several processes (torchrun) and no accelerator: accelerate needs cpu=True to join them with
        # gloo; without it each process trains alone, all of them writing into the same output_dir.
        cpu=int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available(),
        mixed_precision=_mixed_precision(config.optim.mixed_precision),
        log_with=config.trackers or None,
        project_dir=str(output_dir),
    )
    main = accelerator.is_main_process
    say = console.print if main else (lambda *a, **k: None)
    set_seed(config.optim.seed)

    began = time.perf_counter()
    tokenizer = load_tokenizer(config.model.name)
    train_pairs, eval_pairs, data_summaries = prepare_data(config, tokenizer)
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            output_dir / "data_summary.json", {k: v.to_dict() if v else None for k, v in data_summaries.items()}
        )
        write_json_atomic(output_dir / "run_config.json", to_dict(config))
    for split, summary in data_summaries.items():
        if summary is not None:
            say(f"{split} data: {summary}")

    model = load_model(config.model.name, dtype=config.model.dtype)
    model.config.use_cache = False
    stages = config.resolved_stages()
    batcher = Batcher(tokenizer.pad_token_id, config.data.layout, attention_length(model))
    sample_prompts = [p.prompt_ids for p in eval_pairs[: config.eval.samples]]
    samples_before = greedy_responses(model, tokenizer, sample_prompts, config.eval.max_new_tokens)

    outcome: dict[str, Any] = {"stages": []}
    for index, stage in enumerate(stages):
        stage_dir = output_dir / stage.name if len(stages) > 1 else output_dir
        if index > 0 and config.lora.enabled:
            model = model.merge_and_unload()  # bake the earlier stage in: it is this stage's base
        done = stage_dir / DONE_FILE
        if config.resume and done.exists():
            say(f"stage '{stage.name}': already finished, loading its result")
            model = _load_stage_result(model, stage_dir, config)
            outcome["stages"].append(json.loads(done.read_text(encoding="utf-8")))
            continue
        if config.lora.enabled:
            lora = config.lora
            model = apply_lora(model, rank=lora.rank, alpha=lora.alpha, dropout=lora.dropout,
                               target_modules=lora.target_modules, last_layers=lora.last_layers)  # fmt: skip
        objective = build(stage.objective)
        say(f"stage '{stage.name}': {objective.describe()}")
        t0 = time.perf_counter()
        train_ref, eval_ref = make_reference(
            stage.reference, objective, model, config, train_pairs, eval_pairs, batcher, accelerator
        )
        say(f"reference ({stage.reference}): ready in {time.perf_counter() - t0:.1f} s")
        if main:
            for tracker in accelerator.trackers:  # the earlier stage's run: close it, or it gets this stage's logs too
                tracker.finish()
            accelerator.trackers = []
            accelerator.init_trackers(stage.name, config=_flat_config(config, stage))
        trainer = Trainer(
            accelerator=accelerator,
            model=model,
            objective=objective,
            train_pairs=train_pairs,
            eval_pairs=eval_pairs,
            train_reference=train_ref,
            eval_reference=eval_ref,
            batcher=batcher,
            optim=_stage_optim(config, stage),
            eval_config=config.eval,
            output_dir=stage_dir,
            save_every=config.save_every,
            keep_checkpoints=config.keep_checkpoints,
            logit_chunk=config.logit_chunk,
            group_by_length=config.data.group_by_length,
            callbacks=callbacks,
        )
        result = trainer.train(resume=config.resume)
        record = _finish_stage(stage, stage_dir, result, model, tokenizer, config, accelerator)
        outcome["stages"].append(record)
        say(f"stage '{stage.name}': {result.steps} steps in {result.seconds:.0f} s; model in {record['model']}")
    accelerator.end_training()

    samples_after = greedy_responses(model, tokenizer, sample_prompts, config.eval.max_new_tokens)
    samples = [
        {"prompt": tokenizer.decode(p), "before": b, "after": a}
        for p, b, a in zip(sample_prompts, samples_before, samples_after, strict=True)
    ]
    outcome["samples"] = samples
    outcome["seconds"] = time.perf_counter() - began
    last = outcome["stages"][-1] if outcome["stages"] else {}
    first = outcome["stages"][0] if outcome["stages"] else {}
    verdicts = [
        line
        for name in ("accuracy", "margin")
        if (line := gain_verdict(name, first.get("eval_before"), last.get("eval_after"))) is not None
    ]
    outcome["verdicts"] = verdicts
    if main:
        write_json_atomic(output_dir / "outcome.json", outcome)
        _write_summary(output_dir, config, outcome, data_summaries)
        _print_outcome(console, outcome, output_dir)
    return outcome


def _print_outcome(console: Console, outcome: dict[str, Any], output_dir: Path) -> None:
    """The end of a run on the console: held-out before -> after, samples, where the files are."""
    console.print(f"\nheld-out pairs, before -> after training ({outcome['seconds']:.0f} s in all; ties count half):")
    for line in outcome["verdicts"]:
        console.print(f"  {line}", soft_wrap=True)
    for sample in outcome.get("samples", []):
        prompt = sample["prompt"].split("<|im_start|>user")[-1].split("<|im_end|>")[0].strip()
        console.print(f"\n[bold]prompt[/bold]: {prompt[-300:]}", soft_wrap=True, markup=True)
        console.print(f"  [bold]before[/bold]: {sample['before']}", soft_wrap=True, markup=True)
        console.print(f"  [bold]after[/bold]:  {sample['after']}", soft_wrap=True, markup=True)
    console.print(f"\nsummary: {output_dir / 'summary.md'}; curves: {output_dir}/**/curves.png")


def _load_stage_result(model: Any, stage_dir: Path, config: RunConfig) -> Any:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if config.lora.enabled:
        return PeftModel.from_pretrained(model, str(stage_dir / "model"))
    return AutoModelForCausalLM.from_pretrained(str(stage_dir / "model"))


def _finish_stage(
    stage: StageConfig,
    stage_dir: Path,
    result: TrainResult,
    model: Any,
    tokenizer: Any,
    config: RunConfig,
    accelerator: Accelerator,
) -> dict[str, Any]:
    record: dict[str, Any] = {"stage": stage.name, "objective": stage.objective, "steps": result.steps,
                              "seconds": result.seconds, "skipped_steps": result.skipped_steps,
                              "model": str(stage_dir / "model")}  # fmt: skip
    if result.evals:
        record["eval_before"] = result.evals[0]
        record["eval_after"] = result.evals[-1]
    if accelerator.is_main_process:
        if config.lora.enabled:
            save_lora(model, stage_dir / "model", tokenizer=tokenizer)
            if config.merge_lora:
                save_lora(model, stage_dir / "merged", merged=True, tokenizer=tokenizer)
                record["merged"] = str(stage_dir / "merged")
        else:
            _save_full(model, tokenizer, stage_dir / "model")
        plot_curves(result.history, result.evals, stage_dir / "curves.png", f"{stage.name}: {stage.objective}")
        record["curves"] = str(stage_dir / "curves.png")
        write_json_atomic(stage_dir / DONE_FILE, record)
    accelerator.wait_for_everyone()
    return record


def _save_full(model: Any, tokenizer: Any, path: Path) -> None:
    import shutil

    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def _flat_config(config: RunConfig, stage: StageConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {"stage": stage.name, "objective": stage.objective, "reference": stage.reference}
    for section in ("model", "lora", "data", "optim"):
        for key, value in vars(getattr(config, section)).items():
            if isinstance(value, bool | int | float | str):
                flat[f"{section}.{key}"] = value
    return flat


def _metric_line(name: str, before: dict | None, after: dict | None) -> str:
    def show(entry: dict | None) -> str:
        if not entry or name not in entry:
            return "–"
        return str(MetricSummary(entry[name]["mean"], entry[name]["stderr"], entry[name]["count"]))

    return f"{name}: {show(before)} -> {show(after)}"


def _write_summary(
    output_dir: Path, config: RunConfig, outcome: dict[str, Any], data: dict[str, DataSummary | None]
) -> None:
    lines = [f"# preftune run: {output_dir}", "", f"model: `{config.model.name}`; LoRA: {config.lora.enabled}", ""]
    lines += ["## Data", ""] + [f"- {split}: {summary}" for split, summary in data.items() if summary] + [""]
    for record in outcome["stages"]:
        lines += [f"## Stage `{record['stage']}`: `{record['objective']}`", ""]
        lines += [f"{record['steps']} steps in {record['seconds']:.0f} s; model: `{record['model']}`", ""]
        lines += [format_eval_table(record.get("eval_before"), record.get("eval_after")), ""]
        if "curves" in record:
            lines += [f"![curves]({Path(record['curves']).relative_to(output_dir)})", ""]
    if outcome.get("verdicts"):
        lines += ["## Held-out gain (first stage's start -> last stage's end)", ""]
        lines += [f"- {line}" for line in outcome["verdicts"]] + [""]
    if outcome.get("samples"):
        lines += ["## Held-out prompts, greedy responses before and after", ""]
        for sample in outcome["samples"]:
            lines += ["**Prompt**", "", "```", sample["prompt"][-1200:], "```", ""]
            lines += ["**Before**", "", "```", sample["before"], "```", "", "**After**", "", "```", sample["after"],
                      "```", ""]  # fmt: skip
    write_text_atomic(output_dir / "summary.md", "\n".join(lines))


EVAL_ORDER = ("accuracy", "margin", "likelihood_accuracy", "chosen_drift", "rewards/chosen", "rewards/rejected",
              "logps/chosen", "logps/rejected", "chosen_perplexity")  # fmt: skip


def evaluate_model(
    model: str,
    reference: str | None,
    data: str,
    max_length: int = 512,
    limit: int | None = None,
    skip_invalid: bool = False,
    out: Path | None = None,
    batch_size: int = 16,
    beta: float = 0.1,
    average: bool = False,
    logit_chunk: int = 1024,
) -> dict[str, MetricSummary]:
    """Held-out statistics (METHODS.md §6) of ``model`` against a reference on preference pairs.

    ``model``: a built-in name, a model folder or a LoRA adapter folder (its base is loaded too).
    The reference is ``reference`` when given, else an adapter's base (adapters disabled), else
    the model itself (then margin and accuracy carry no information: h = 0). Prints a table of
    mean ± standard error on stdout, writes the same as JSON to ``out`` and returns it.
    """
    from peft import PeftModel

    from preftune.evaluation.statistical import pair_values, summarise
    from preftune.modeling import AdapterDisabledReference, ModelReference, resolve_model, sequence_logprobs

    if max_length < 2:
        raise PreftuneError(f"--max-length must be at least 2, got {max_length}")
    if limit is not None and limit < 1:
        raise PreftuneError(f"--limit must be at least 1, got {limit}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folder = Path(resolve_model(model))
    adapter_config = folder / "adapter_config.json"
    base_name = None
    if adapter_config.is_file():
        base_name = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
        if not base_name:
            raise PreftuneError(f"{adapter_config} does not name its base model (base_model_name_or_path)")
    has_tokenizer = (folder / "tokenizer_config.json").is_file() or not folder.is_dir()
    tokenizer = load_tokenizer(model if has_tokenizer or base_name is None else base_name)

    # the data first: a bad file is refused before any weights are loaded
    examples, summary = load_preference_data(resolve_source(data), skip_invalid=skip_invalid)
    if limit is not None:
        examples = examples[:limit]
    pairs, tok_summary = tokenize_examples(examples, tokenizer, max_length, max_length // 2, summary=summary)
    _check_prompt_room(examples, tokenizer, max_length, tok_summary)

    if base_name is not None:
        policy_model = PeftModel.from_pretrained(load_model(base_name, dtype="float32"), str(folder)).to(device).eval()
    else:
        policy_model = load_model(model, dtype="float32", device=device)

    def policy(batch):
        return sequence_logprobs(policy_model, batch, with_tokens=False, chunk_size=logit_chunk)

    if reference is not None:
        ref_fn = ModelReference(load_model(reference, dtype="float32", device=device), chunk_size=logit_chunk)
        ref_name = reference
    elif base_name is not None:
        ref_fn, ref_name = AdapterDisabledReference(policy_model, chunk_size=logit_chunk), f"{base_name} (adapter off)"
    else:
        ref_fn, ref_name = policy, f"{model} itself (h = 0: margin and accuracy say nothing)"
    values = pair_values(
        policy, ref_fn, pairs, torch.arange(len(pairs)), Batcher(tokenizer.pad_token_id,
        attention_length=attention_length(policy_model)), batch_size, device, beta, average,
    )  # fmt: skip
    metrics = summarise({k: torch.tensor(v) for k, v in values.items()})

    names = [n for n in EVAL_ORDER if n in metrics] + sorted(set(metrics) - set(EVAL_ORDER))
    width = max(len(n) for n in names)
    lines = [f"model: {model}", f"reference: {ref_name}", f"data: {tok_summary.source}: {len(pairs)} pairs", ""]
    lines += [f"{'metric':<{width}}  mean ± stderr (n)"]
    for n in names:
        m = metrics[n]
        shown = f"{m.mean:.4f} ± {m.stderr:.4f}" if m.stderr == m.stderr else f"{m.mean:.4f}"  # no stderr: NaN
        lines.append(f"{n:<{width}}  {shown} ({m.count})")
    print("\n".join(lines))
    if out is not None:
        write_json_atomic(
            Path(out),
            {"model": model, "reference": ref_name, "data": data, "pairs": len(pairs), "beta": beta, "average": average,
             "metrics": {n: metrics[n].to_dict() for n in names}},
        )  # fmt: skip
    return metrics
