"""What a stage leaves on disk, and reading it back: every saved model loads to the trained policy.

A stage's ``model/`` is its LoRA adapter, or its full weights. Under LoRA a later stage trains
a fresh adapter on top of the earlier stage's result with the earlier adapter merged in, so its
adapter only means something on those merged weights: the earlier stage always writes
``merged/`` and the later adapter names that folder as its base (``base_model_name_or_path``,
an absolute path). ``AutoModelForCausalLM.from_pretrained(stage/model)`` then loads exactly
the policy the stage trained.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from preftune.files import write_json_atomic
from preftune.modeling import load_model, save_lora
from preftune.run.config import RunConfig, StageConfig
from preftune.run.report import plot_curves
from preftune.run_layout import DONE_FILE
from preftune.training.loop import TrainResult


def finish_stage(
    stage: StageConfig,
    stage_dir: Path,
    result: TrainResult,
    model: Any,
    tokenizer: Any,
    config: RunConfig,
    accelerator: Accelerator,
    *,
    base_dir: Path | None,
    later_stage: bool,
    rounds: Sequence[dict[str, float]] = (),
) -> dict[str, Any]:
    """Save the stage's model, curves and record; ``base_dir``: the merged folder this stage's adapter sits on."""
    record: dict[str, Any] = {
        "stage": stage.name,
        "objective": stage.objective,
        "steps": result.steps,
        "seconds": result.seconds,
        "skipped_steps": result.skipped_steps,
        "model": str(stage_dir / "model"),
    }
    if result.evals:
        record["eval_before"] = result.evals[0]
        record["eval_after"] = result.evals[-1]
        record["evals"] = result.evals  # every held-out evaluation: before, every eval.every steps, after
    for name in ("win_rates", "gradient_cosines"):  # the periodic hooks' records, when the stage ran them
        if result.records.get(name):
            record[name] = result.records[name]
    if accelerator.is_main_process:
        if config.lora.enabled:
            save_adapter(model, stage_dir / "model", tokenizer, base_dir)
            if config.merge_lora or later_stage:  # a later stage's adapter is relative to these weights
                save_lora(model, stage_dir / "merged", merged=True, tokenizer=tokenizer)
                record["merged"] = str(stage_dir / "merged")
        else:
            save_full(model, tokenizer, stage_dir / "model")
        title = f"{stage.name}: {stage.objective}"
        plot_curves(result.history, result.evals, stage_dir / "curves.png", title, rounds=rounds)
        record["curves"] = str(stage_dir / "curves.png")
        write_json_atomic(stage_dir / DONE_FILE, record)
    accelerator.wait_for_everyone()
    return record


def save_adapter(model: Any, path: Path, tokenizer: Any, base_dir: Path | None) -> None:
    """The LoRA adapter; on top of an earlier stage, with that stage's merged folder as its base."""
    save_lora(model, path, tokenizer=tokenizer, base_model=base_dir.resolve() if base_dir is not None else None)


def save_full(model: Any, tokenizer: Any, path: Path) -> None:
    """Full weights and tokenizer, written beside ``path`` and renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    if path.exists():
        shutil.rmtree(path)
    tmp.rename(path)


def load_stage_result(model: Any, stage_dir: Path, config: RunConfig) -> Any:
    """A finished stage's policy, rebuilt on ``model`` (the stage's starting point) for a resumed run."""
    from peft import PeftModel

    if config.lora.enabled:
        from preftune.modeling.adapter_precision import keep_adapters_in_float32

        policy = PeftModel.from_pretrained(model, str(stage_dir / "model"), is_trainable=True)
        keep_adapters_in_float32(policy)  # as apply_lora does for a new adapter
        return policy
    return load_model(stage_dir / "model", dtype=config.model.dtype)
