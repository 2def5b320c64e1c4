"""Files of model outputs, one completion per prompt (``prompt`` + ``completion``, or the first of
``completions`` as ``preftune generate`` writes them), read for win rates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from preftune.data.validation import is_message_list
from preftune.errors import PreftuneError
from preftune.generation.prompts import prompt_key


def _valid_prompt(prompt: Any) -> bool:
    return bool(prompt.strip()) if isinstance(prompt, str) else is_message_list(prompt)


def read_completions(path: Path, flag: str) -> dict[str, tuple[Any, str]]:
    """``{prompt key: (prompt, completion)}`` from a JSON Lines file; a bad row is one error naming its line."""
    if not path.is_file():
        raise PreftuneError(f"{flag}{path}: no such file")
    rows: dict[str, tuple[Any, str]] = {}
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{flag}{path} line {number}"
            try:
                row = json.loads(line)
            except ValueError as err:
                raise PreftuneError(f"{where}: not JSON ({err})") from None
            if not isinstance(row, dict) or not _valid_prompt(row.get("prompt")):
                raise PreftuneError(f"{where}: needs a 'prompt' (a non-empty string or a list of messages)")
            completion = row.get("completion")
            if completion is None and isinstance(row.get("completions"), list) and row["completions"]:
                completion = row["completions"][0]
            if not isinstance(completion, str):
                raise PreftuneError(f"{where}: needs a 'completion' string (or a non-empty 'completions' list of them)")
            key = prompt_key(row["prompt"])
            if key in rows:
                raise PreftuneError(f"{where}: this prompt already appeared earlier in the file")
            rows[key] = (row["prompt"], completion)
    if not rows:
        raise PreftuneError(f"{flag}{path}: no rows")
    return rows
