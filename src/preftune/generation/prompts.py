"""Prompts to generate from: read from prompt files, MT-Bench, AlpacaEval or preference data.

    >>> prompts = read_prompts("mt-bench-questions.jsonl", limit=10)
    >>> ids = [encode_prompt(tokenizer, p) for p in prompts]

Each row gives one prompt, found by the first of these keys it has:

- ``prompt``: a non-empty string or a list of messages (``role``/``content``) not ending with an
  assistant turn (prompt files, and preference data with an explicit prompt: its ``chosen`` and
  ``rejected`` are ignored);
- ``turns``: MT-Bench; the FIRST turn becomes ``[{"role": "user", "content": turns[0]}]``;
- ``instruction``: AlpacaEval (and Alpaca, whose non-empty ``input`` is appended after a blank line).

A source whose rows have ``chosen``/``rejected`` but no ``prompt`` (HH-RLHF transcripts, say
``bundled:hh-harmless``) is read by :func:`preftune.data.load_preference_data`, and each pair's
prompt is taken. Every row is checked before anything else; the first bad one is a one-line
:class:`PreftuneError` naming the file and row. Identical prompts are kept once, in the order they
first appear (:attr:`PromptSet.duplicates` counts the rest); ``limit`` then keeps the first K.

Tokenisation (:func:`encode_prompt`): a message list goes through the tokenizer's chat template
with the generation prompt; a string prompt is wrapped as ONE user message when the tokenizer has
a chat template (an instruct model answers it as a chat), else tokenised as plain text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.data.columns import guess_columns
from preftune.data.options import resolve_source
from preftune.data.sources import load_rows
from preftune.data.validation import is_message_list
from preftune.errors import PreftuneError

Prompt = str | list[dict[str, str]]


@dataclass(frozen=True)
class PromptSet:
    """The distinct prompts of a source, in order, and how many duplicates were dropped."""

    name: str
    prompts: list[Prompt]
    duplicates: int = 0
    rows: int = 0

    def __str__(self) -> str:
        extra = f", {self.duplicates} duplicate prompts dropped" if self.duplicates else ""
        return f"{self.name}: {self.rows} rows, {len(self.prompts)} prompts{extra}"


def prompt_key(prompt: Prompt) -> str:
    """A canonical text of a prompt: equal prompts have equal keys (used to dedupe and to resume)."""
    return json.dumps(prompt, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _row_prompt(row: dict[str, Any], origin: object) -> Prompt:
    present = {key for key, value in row.items() if value is not None}  # a file's missing columns read as None
    if "prompt" in present:
        prompt = row["prompt"]
        if _text(prompt):
            return prompt
        if is_message_list(prompt):
            if prompt[-1]["role"] == "assistant":
                raise PreftuneError(f"{origin}: 'prompt' ends with an assistant turn; there is nothing to answer")
            return [{"role": m["role"], "content": m["content"]} for m in prompt]
        raise PreftuneError(f"{origin}: 'prompt' must be a non-empty string or a list of messages (role, content)")
    if "turns" in present:
        turns = row["turns"]
        if not isinstance(turns, list) or not turns or not _text(turns[0]):
            raise PreftuneError(f"{origin}: 'turns' must be a list whose first turn is a non-empty string")
        return [{"role": "user", "content": turns[0]}]
    if "instruction" in present:
        instruction, extra = row["instruction"], row.get("input")
        if not _text(instruction):
            raise PreftuneError(f"{origin}: 'instruction' must be a non-empty string")
        if extra is not None and not isinstance(extra, str):
            raise PreftuneError(f"{origin}: 'input' must be a string")
        return f"{instruction}\n\n{extra}" if extra and extra.strip() else instruction
    columns = ", ".join(map(str, sorted(present))) or "no columns"
    guess = guess_columns(sorted(map(str, present)), ("prompt",)).get("prompt")
    rename = f"'{guess}'" if guess else "the column that holds the prompts"
    raise PreftuneError(
        f"{origin}: no prompt: expected 'prompt', 'turns' (MT-Bench), 'instruction' (AlpacaEval), "
        f"or 'chosen'/'rejected' transcripts (preference data); found {columns}; rename {rename} to 'prompt'"
    )


def load_prompts(source: str | Path, limit: int | None = None) -> PromptSet:
    """The distinct prompts of ``source`` (a file, folder, Hub name or ``bundled:NAME``), checked up front."""
    if limit is not None and limit < 1:
        raise PreftuneError(f"limit must be at least 1, not {limit}")
    resolved = resolve_source(str(source)) if isinstance(source, str) else source
    raw = load_rows(resolved)
    if any(
        row.get("prompt") is None and row.get("chosen") is not None and row.get("rejected") is not None
        for row in raw.rows
    ):
        from preftune.data.load import load_preference_data

        examples, _ = load_preference_data(resolved)
        found = [example.prompt for example in examples]
    else:
        found = [_row_prompt(row, raw.origin(index)) for index, row in enumerate(raw.rows)]
    seen: set[str] = set()
    prompts: list[Prompt] = []
    for prompt in found:
        key = prompt_key(prompt)
        if key not in seen:
            seen.add(key)
            prompts.append(prompt)
    if not prompts:
        raise PreftuneError(f"{raw.name}: no prompts")
    duplicates = len(found) - len(prompts)
    return PromptSet(raw.name, prompts[:limit] if limit else prompts, duplicates, len(raw.rows))


def read_prompts(source: str | Path, limit: int | None = None) -> list[Prompt]:
    """The distinct prompts of ``source``, in order, at most ``limit`` (see the module docstring)."""
    return load_prompts(source, limit).prompts


def check_tokenizer(tokenizer: Any, prompts: list[Prompt]) -> None:
    """Refuse message prompts when the tokenizer has no chat template (before any generation)."""
    if not getattr(tokenizer, "chat_template", None) and any(isinstance(p, list) for p in prompts):
        raise PreftuneError("the prompts are conversations but the model's tokenizer has no chat template")


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """A prompt's ids, the generation prompt included (see the module docstring)."""
    if isinstance(prompt, str):
        if not getattr(tokenizer, "chat_template", None):
            return list(tokenizer(prompt)["input_ids"])
        prompt = [{"role": "user", "content": prompt}]
    out = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True)
    return list(out["input_ids"])
