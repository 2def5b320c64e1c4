"""A run's data, in two steps: rows -> validated, split examples (no tokenizer, no model), then
examples -> token pairs.

The first step runs before anything is loaded or converted, so a missing file, a wrong column
or a bad row costs the user nothing. The held-out pairs are whole groups of pairs (by default
all pairs sharing a prompt), so no prompt is both trained on and held out; they are saved with
the run (``heldout.jsonl``) so that ``preftune evaluate --run`` scores exactly them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from preftune.data import (
    DataSummary,
    PreferenceExample,
    TokenizedPair,
    bundled_path,
    load_preference_data,
    tokenize_examples,
)
from preftune.data.split import hold_out
from preftune.errors import PreftuneError
from preftune.training.config import DataConfig
from preftune.training.report import write_text_atomic

HELD_OUT_FILE = "heldout.jsonl"


def resolve_source(source: str) -> str:
    """``bundled:NAME`` -> the bundled file; anything else is passed on as is."""
    return str(bundled_path(source.split(":", 1)[1])) if source.startswith("bundled:") else source


def data_options(d: DataConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`preftune.data.load_preference_data` that ``data.*`` sets."""
    return {"format": d.format, "columns": d.columns or None, "pairing": d.pairing, "skip_invalid": d.skip_invalid,
            "split": d.split, "labels": d.labels}  # fmt: skip


@dataclass
class Examples:
    """Validated examples of a run, split into training and held-out, with their summaries."""

    train: list[PreferenceExample]
    held_out: list[PreferenceExample]
    summaries: dict[str, DataSummary | None]


@dataclass
class Inputs:
    """Token pairs of a run: what the trainer reads."""

    train: list[TokenizedPair]
    held_out: list[TokenizedPair]
    held_out_examples: list[PreferenceExample]
    summaries: dict[str, DataSummary | None]


def load_examples(d: DataConfig) -> Examples:
    """Read and validate every row, then hold out ``data.eval_size`` pairs (or read ``data.eval``)."""
    options = data_options(d)
    examples, summary = load_preference_data(resolve_source(d.train), **options)
    if d.eval:
        # data.split picks a split of data.train; a separate held-out source is read whole (its train split)
        held_out, held_summary = load_preference_data(resolve_source(d.eval), **{**options, "split": None})
        return Examples(examples, held_out, {"train": summary, "eval": held_summary})
    train, held_out, split = hold_out(examples, d.eval_size, group_by=d.split_by)
    summary = summary.with_split(split)
    held_summary = replace(summary, kept=len(held_out)) if held_out else None
    return Examples(train, held_out, {"train": summary, "eval": held_summary})


def tokenize_inputs(examples: Examples, tokenizer: Any, d: DataConfig) -> Inputs:
    """Tokenise both splits with the model's chat template; cut to ``data.max_length`` and ``train_size``."""
    # Without a prompt budget, a long prompt would leave no room and its pair would be dropped:
    # by default the prompt keeps at most half of max_length (cut from the left).
    max_prompt = d.max_prompt_length if d.max_prompt_length is not None else d.max_length // 2
    summaries = examples.summaries
    train, train_summary = tokenize_examples(examples.train, tokenizer, d.max_length, max_prompt,
                                             summary=summaries["train"])  # fmt: skip
    check_prompt_room(examples.train, tokenizer, d.max_length, train_summary)
    if d.train_size is not None and d.train_size < len(train):
        train = train[: d.train_size]
        train_summary = train_summary.limited(train)
    held: list[TokenizedPair] = []
    held_summary: DataSummary | None = None
    if examples.held_out:
        held, held_summary = tokenize_examples(examples.held_out, tokenizer, d.max_length, max_prompt,
                                               summary=summaries["eval"])  # fmt: skip
    kept = {id(p.origin) for p in held}
    held_examples = [e for e in examples.held_out if id(e.origin) in kept] if held else []
    return Inputs(train, held, held_examples, {"train": train_summary, "eval": held_summary})


def check_prompt_room(examples: Sequence[Any], tokenizer: Any, max_length: int, summary: DataSummary) -> None:
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


def example_row(example: PreferenceExample) -> dict[str, Any]:
    """One example as a row of TRL's standard or conversational format (what the loaders read back)."""
    return {"prompt": example.prompt, "chosen": example.chosen, "rejected": example.rejected}


def save_held_out(examples: Sequence[PreferenceExample], path: Path) -> None:
    """The held-out pairs as JSON Lines, written atomically (``preftune evaluate --run`` reads them)."""
    write_text_atomic(path, "".join(json.dumps(example_row(e), ensure_ascii=False) + "\n" for e in examples))
