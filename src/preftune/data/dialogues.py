"""Implicit prompts: full dialogues in ``chosen``/``rejected`` that share everything but the last reply.

Two spellings are accepted (TRL's "implicit prompt" preference format):

- message lists: ``chosen = [user, assistant, ..., user, assistant]``;
- Anthropic HH-RLHF transcripts: ``"\\n\\nHuman: …\\n\\nAssistant: …"``, parsed into messages.

The prompt is every turn before the final assistant turn; chosen and rejected are that final
turn each. The two dialogues must agree on the prompt: a row whose dialogues differ earlier is
invalid (TRL's ``extract_prompt`` would silently take a shorter common prefix instead).
"""

from __future__ import annotations

import re
from typing import Any

from preftune.data.examples import Message
from preftune.data.validation import RowProblem, as_messages, as_text

HH_TURN = re.compile(r"\n\n(Human|Assistant):[ \t]?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def is_hh_transcript(text: Any) -> bool:
    """True for a string that starts like an HH-RLHF transcript."""
    return isinstance(text, str) and text.lstrip(" \t\n").startswith(("Human:", "Assistant:"))


def parse_hh(text: str, field: str) -> list[Message]:
    """Parse ``"\\n\\nHuman: a\\n\\nAssistant: b"`` into ``[{user: a}, {assistant: b}]``.

    Turn contents are stripped of surrounding whitespace; the text before the first marker must
    be blank.
    """
    if not is_hh_transcript(as_text(text, field)):
        raise RowProblem(field, "not an HH-RLHF transcript (expected '\\n\\nHuman: …\\n\\nAssistant: …')")
    text = "\n\n" + text.lstrip(" \t\n")
    parts = HH_TURN.split(text)  # ['', 'Human', 'a', 'Assistant', 'b', ...]
    return [
        {"role": HH_ROLES[role], "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _last_assistant(messages: list[Message], field: str) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            if i != len(messages) - 1:
                raise RowProblem(field, f"the dialogue ends with a {messages[-1]['role']} turn, not an assistant turn")
            return i
    raise RowProblem(field, "the dialogue has no assistant turn")


def split_dialogues(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[Message], list[Message]]:
    """(prompt, chosen response, rejected response) from two full dialogues.

    Raises:
        RowProblem: a dialogue does not end with an assistant turn, or the two differ before it.
    """
    c, r = _last_assistant(chosen, "chosen"), _last_assistant(rejected, "rejected")
    if chosen[:c] != rejected[:r]:
        turn = next((i for i, (a, b) in enumerate(zip(chosen[:c], rejected[:r], strict=False)) if a != b), min(c, r))
        raise RowProblem(
            "chosen/rejected",
            "the two dialogues differ before their final assistant turn",
            f"at turn {turn + 1}; the prompt must be their shared prefix",
        )
    return chosen[:c], chosen[c:], rejected[r:]


def parse_implicit(chosen: Any, rejected: Any) -> tuple[list[Message], list[Message], list[Message]]:
    """(prompt, chosen, rejected) messages from two message lists or two HH transcripts."""
    if isinstance(chosen, str) or isinstance(rejected, str):
        chosen_msgs, rejected_msgs = parse_hh(chosen, "chosen"), parse_hh(rejected, "rejected")
    else:
        chosen_msgs, rejected_msgs = as_messages(chosen, "chosen"), as_messages(rejected, "rejected")
    return split_dialogues(chosen_msgs, rejected_msgs)
