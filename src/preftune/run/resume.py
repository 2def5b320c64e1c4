"""What ``--resume`` may continue: the same training, and nothing else.

A run writes ``run_config.json`` (its resolved config) and ``run_inputs.json`` (fingerprints of
the tokenised training and held-out pairs) before its first step. A resumed run compares itself
with both and refuses, in one line listing the differing keys, any change to what is trained —
objective, data, model, LoRA shape, optimiser, schedule, length — since continuing would train
a different model than ``outcome.json`` then describes (or crash on a tensor of another size).
Settings that only change where logs go, how often checkpoints are kept or how evaluation is
batched may change.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from preftune.data import TokenizedGroup
from preftune.errors import PreftuneError
from preftune.run.config import rename_old_keys
from preftune.run_layout import CONFIG_FILE, DONE_FILE, INPUTS_FILE, stage_dirs
from preftune.training.checkpoint import latest_checkpoint
from preftune.training.settings import RefreshConfig

# Keys that may change on resume: they change logging, checkpoint keeping, evaluation batching,
# how the LM head is chunked (same numbers) or what is written at the end, not the training.
MAY_CHANGE = (
    "output_dir",
    "resume",
    "trackers",
    "save_every",
    "keep_checkpoints",
    "merge_lora",
    "logit_chunk",
    "eval.every",
    "eval.batch_size",
    "eval.samples",
    "eval.max_new_tokens",
    "model.gradient_checkpointing",
)


def has_progress(output_dir: Path, stage_names: Sequence[str]) -> bool:
    """Whether any stage of a run left a checkpoint or a finished result in ``output_dir``."""
    return any(
        latest_checkpoint(d) is not None or (d / DONE_FILE).exists() for d in stage_dirs(output_dir, stage_names)
    )


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


def changed_keys(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two config dicts, the keys in :data:`MAY_CHANGE` aside."""
    old, new = _flatten(saved), _flatten(current)
    keys = sorted(set(old) | set(new))
    return [k for k in keys if old.get(k, "<unset>") != new.get(k, "<unset>") and not k.startswith(MAY_CHANGE)]


def check_resumable(output_dir: Path, stage_names: Sequence[str], config: dict[str, Any]) -> None:
    """Before anything loads: refuse ``--resume`` with nothing to resume, or with a changed config."""
    if not has_progress(output_dir, stage_names):
        raise PreftuneError(
            f"--resume: {output_dir} holds no checkpoint to continue from; run without --resume to start"
        )
    saved_file = output_dir / CONFIG_FILE
    if not saved_file.is_file():
        raise PreftuneError(f"--resume: {saved_file} is missing, so the run cannot be checked; start a new run")
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    rename_old_keys(saved, str(saved_file))  # a run saved before the sampling section resumes
    saved.setdefault("ref_refresh", asdict(RefreshConfig()))  # a run saved before ref_refresh ran without one
    changed = changed_keys(saved, config)
    if changed:
        shown = ", ".join(f"{k} ({_show(_flatten(saved).get(k))} -> {_show(_flatten(config).get(k))})" for k in changed)
        raise PreftuneError(
            f"--resume would change what is trained: {shown}; resume with the saved settings "
            f"({saved_file}) or choose another output_dir"
        )


def _show(value: Any) -> str:
    text = json.dumps(value, default=str) if value is not None else "unset"
    return text if len(text) <= 40 else text[:37] + "..."


def pairs_fingerprint(pairs: Sequence[Any]) -> str:
    """A sha256 of the token ids of ``pairs`` (or groups, with their rewards), in order (order
    matters: it fixes what each step reads)."""
    digest = hashlib.sha256()
    for pair in pairs:
        if pair.rewards is None and pair.num_responses == 2:  # a preference pair, hashed as pairs always were
            ids: tuple[Any, ...] = (pair.prompt_ids, pair.chosen_ids, pair.rejected_ids, pair.rejected_prompt_ids)
        else:
            ids = (pair.prompt_ids, list(pair.responses), pair.rewards)
        digest.update(json.dumps(ids).encode())
    return digest.hexdigest()


def inputs_record(train: Sequence[TokenizedGroup], held_out: Sequence[TokenizedGroup]) -> dict[str, Any]:
    return {
        "train": {"pairs": len(train), "sha256": pairs_fingerprint(train)},
        "eval": {"pairs": len(held_out), "sha256": pairs_fingerprint(held_out)},
    }


def check_same_inputs(output_dir: Path, record: dict[str, Any]) -> None:
    """On resume: the tokenised pairs must be those the run started with (a data file may have changed)."""
    saved_file = output_dir / INPUTS_FILE
    if not saved_file.is_file():
        raise PreftuneError(f"--resume: {saved_file} is missing, so the data cannot be checked; start a new run")
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    rename_old_keys(saved, str(saved_file))  # a run saved before the sampling section resumes
    for split, name in (("train", "training"), ("eval", "held-out")):
        if saved.get(split) != record[split]:
            before, now = saved.get(split, {}).get("pairs"), record[split]["pairs"]
            raise PreftuneError(
                f"--resume would change what is trained: the {name} pairs differ from the run's "
                f"({before} pairs then, {now} now, different tokens); restore the data or choose another output_dir"
            )
