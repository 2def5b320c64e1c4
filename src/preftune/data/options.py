"""From ``data.*`` settings to the loaders' arguments, and the check that the prompts leave room.

Shared by ``preftune train`` and ``preftune evaluate``, so both read the same rows the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from preftune.data.config import DataConfig
from preftune.data.resources import bundled_path
from preftune.data.summary import DataSummary
from preftune.errors import PreftuneError


def resolve_source(source: str) -> str:
    """``bundled:NAME`` -> the bundled file; anything else is passed on as is."""
    return str(bundled_path(source.split(":", 1)[1])) if source.startswith("bundled:") else source


def data_options(d: DataConfig) -> dict[str, Any]:
    """The keyword arguments of :func:`preftune.data.load_preference_data` that ``data.*`` sets."""
    return {
        "format": d.format,
        "columns": d.columns or None,
        "pairing": d.pairing,
        "skip_invalid": d.skip_invalid,
        "split": d.split,
        "labels": d.labels,
        "score_gap": d.score_gap,
    }


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
