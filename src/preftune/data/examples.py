"""Validated preference examples: what every data format becomes.

One canonical representation per kind of data, following TRL's conventions:

- **text** (TRL "standard"): ``prompt``, ``chosen``, ``rejected`` are plain strings. The
  tokenizer concatenates them and appends EOS to each response; no chat template.
- **conversational**: ``prompt`` is a list of ``{"role", "content"}`` messages ending with a
  user (or tool) turn; ``chosen`` and ``rejected`` are lists of messages starting (and ending)
  with an assistant turn. The tokenizer applies the model's chat template.

Each example remembers where it came from (:class:`Origin`), so that any later error can name
the file, the row and, for rows that give several pairs, which pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

Message: TypeAlias = dict[str, str]
"""One chat message, ``{"role": ..., "content": ...}`` (roles: system, user, assistant, tool)."""

Text: TypeAlias = str | list[Message]
"""A prompt or a response: a plain string (text data) or a list of messages (conversational)."""


@dataclass(frozen=True)
class Origin:
    """Where an example came from: a file (or dataset) name, a 1-based row, optionally a part.

    ``part`` names the pair within a row that gives several (ranked completions, message
    trees), e.g. ``"completions 0 vs 2"``.
    """

    source: str
    row: int
    part: str = ""

    def __str__(self) -> str:
        where = f"{self.source} row {self.row}"
        return f"{where} ({self.part})" if self.part else where


@dataclass(frozen=True)
class PreferenceExample:
    """A prompt with a preferred (``chosen``) and a dispreferred (``rejected``) response.

    Attributes:
        prompt: the prompt, a string (text data) or a list of messages (conversational).
        chosen: the preferred response, same kind as ``prompt``.
        rejected: the dispreferred response, same kind as ``prompt``.
        origin: the file and row it came from.
        rejected_prompt: for unpaired data only (:func:`preftune.data.load_unpaired`): the
            prompt of the row the rejected response came from; ``None`` when the rejected
            response answers ``prompt``.
        rejected_origin: for unpaired data only: the row the rejected response came from.
    """

    prompt: Text
    chosen: Text
    rejected: Text
    origin: Origin
    rejected_prompt: Text | None = None
    rejected_origin: Origin | None = None

    @property
    def is_conversational(self) -> bool:
        """True when the example holds message lists (the chat template applies)."""
        return isinstance(self.prompt, list)

    @property
    def is_paired(self) -> bool:
        """True when chosen and rejected answer the same prompt."""
        return self.rejected_prompt is None
