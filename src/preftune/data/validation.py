"""Row validation: every example is checked before any training starts.

A problem with a row is a :class:`RowProblem` (the field and what is wrong). The loaders either
turn the first one into a one-line :class:`~preftune.errors.PreftuneError` naming the file, the
row and the field, or, with ``skip_invalid=True``, drop the row and count it by reason in a
:class:`Tally`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from preftune.data.examples import Message, Origin, PreferenceExample, Text
from preftune.data.rows import RawRows
from preftune.errors import PreftuneError

T = TypeVar("T")

ROLES = ("system", "user", "assistant", "tool")
# Other spellings of roles, as in ShareGPT ("human"/"gpt") and OpenAssistant ("prompter").
ROLE_ALIASES = {"human": "user", "gpt": "assistant", "prompter": "user", "bot": "assistant", "model": "assistant"}


class RowProblem(Exception):
    """What is wrong with one row: the field (``"chosen"``, ``"prompt[1].role"``...), the problem,
    and row-specific details shown in the error but left out of the ``skip_invalid`` counts."""

    def __init__(self, field: str, problem: str, detail: str = "") -> None:
        super().__init__(f"field '{field}': {problem}" + (f" ({detail})" if detail else ""))
        self.field = field
        self.problem = problem

    @property
    def reason(self) -> str:
        """The key under which ``skip_invalid`` counts this problem."""
        top = self.field.split("[")[0].split(".")[0]
        return f"{top}: {self.problem}"


def one_line(text: str) -> str:
    """``text`` with its line breaks shown as ``\\n``, so that an error stays on one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def row_error(origin: Origin, problem: RowProblem) -> PreftuneError:
    """The one-line error for a bad row, e.g. ``data.jsonl row 7: field 'chosen': empty string``."""
    return PreftuneError(one_line(f"{origin}: {problem}"))


def type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def as_text(value: Any, field: str) -> str:
    """``value`` if it is a string; a :class:`RowProblem` otherwise."""
    if value is None:
        raise RowProblem(field, "missing value (null)")
    if not isinstance(value, str):
        raise RowProblem(field, f"expected a string, got {type_name(value)}")
    return value


def as_message(value: Any, field: str) -> Message:
    """Normalise one message to ``{"role", "content"}`` (ShareGPT's ``from``/``value`` accepted)."""
    if not isinstance(value, dict):
        raise RowProblem(field, f"expected a message {{role, content}}, got {type_name(value)}")
    role = value.get("role", value.get("from"))
    content = value.get("content", value.get("value"))
    if role is None:
        raise RowProblem(field, "message has no 'role'")
    if content is None:
        raise RowProblem(field, "message has no 'content'")
    if not isinstance(role, str):
        raise RowProblem(f"{field}.role", f"expected a string, got {type_name(role)}")
    if not isinstance(content, str):
        raise RowProblem(f"{field}.content", f"expected a string, got {type_name(content)}")
    role = ROLE_ALIASES.get(role.lower(), role.lower())
    if role not in ROLES:
        raise RowProblem(f"{field}.role", "unknown role", f"'{role}'; expected one of {', '.join(ROLES)}")
    return {"role": role, "content": content}


def as_messages(value: Any, field: str) -> list[Message]:
    """Normalise a list of messages; a :class:`RowProblem` if it is not one."""
    if not isinstance(value, list):
        raise RowProblem(field, f"expected a list of messages, got {type_name(value)}")
    return [as_message(m, f"{field}[{i}]") for i, m in enumerate(value)]


def is_messages(value: Any) -> bool:
    """True for a non-empty list whose first item looks like a message (TRL's test)."""
    return isinstance(value, list) and bool(value) and isinstance(value[0], dict)


def is_message_list(value: Any) -> bool:
    """True for a non-empty list of messages, each a dict with string ``role`` and ``content``."""
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value
        )
    )


def _check_text(value: str, field: str) -> None:
    if not value.strip():
        raise RowProblem(field, "empty string" if not value else "empty string (only whitespace)")


def _check_messages(messages: list[Message], field: str, *, response: bool) -> None:
    if not messages:
        raise RowProblem(field, "empty response (no messages)" if response else "empty prompt (no messages)")
    for i, message in enumerate(messages):
        if not message["content"].strip():
            raise RowProblem(f"{field}[{i}].content", "empty string")
    if response:
        if messages[0]["role"] != "assistant":
            raise RowProblem(
                f"{field}[0].role", f"a response must start with an assistant turn, not {messages[0]['role']}"
            )
        if messages[-1]["role"] != "assistant":
            raise RowProblem(
                f"{field}[-1].role", f"a response must end with an assistant turn, not {messages[-1]['role']}"
            )
    elif messages[-1]["role"] not in ("user", "tool"):
        raise RowProblem(f"{field}[-1].role", f"a prompt must end with a user turn, not {messages[-1]['role']}")


def check_part(value: Text, field: str, conversational: bool, *, response: bool) -> None:
    """Check a prompt (``response=False``) or a response of the given kind; a RowProblem if bad."""
    if conversational:
        if not isinstance(value, list):
            raise RowProblem(field, f"expected a list of messages like the prompt, got {type_name(value)}")
        _check_messages(value, field, response=response)
    else:
        if not isinstance(value, str):
            raise RowProblem(field, f"expected a string like the prompt, got {type_name(value)}")
        _check_text(value, field)


def check_example(example: PreferenceExample) -> None:
    """Raise a :class:`RowProblem` for the first thing wrong with ``example``.

    Checked: kinds agree (all text or all messages), nothing is empty, prompts end with a user
    turn, responses start and end with an assistant turn, and chosen differs from rejected.
    """
    conversational = example.is_conversational
    check_part(example.prompt, "prompt", conversational, response=False)
    check_part(example.chosen, "chosen", conversational, response=True)
    check_part(example.rejected, "rejected", conversational, response=True)
    if example.rejected_prompt is not None:
        check_part(example.rejected_prompt, "rejected_prompt", conversational, response=False)
    same_prompt = example.rejected_prompt is None or example.rejected_prompt == example.prompt
    if same_prompt and example.chosen == example.rejected:
        raise RowProblem("rejected", "chosen is identical to rejected")


class Tally:
    """Counts of dropped rows (or pairs) by reason, for ``skip_invalid`` and truncation."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, reason: str, n: int = 1) -> None:
        self.counts[reason] += n

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        """Reasons, most frequent first."""
        return dict(self.counts.most_common())


def validate_rows(
    raw: RawRows,
    parse: Callable[[dict[str, Any], Origin], list[T]],
    check: Callable[[T], None],
    *,
    skip_invalid: bool,
    tally: Tally,
    origin_of: Callable[[T], Origin],
    no_item_reason: str = "no pair (fewer than two distinct ranks)",
) -> list[T]:
    """Parse and check every row: raise on the first problem, or drop it and count it by reason.

    ``parse`` turns a row into items (several for a ranked row, none when nothing can be
    paired, which is counted under ``no_item_reason`` and never an error); ``check`` validates
    each item. Problems raise a one-line error naming the row and field unless ``skip_invalid``.
    Lines the reader already dropped (``raw.dropped``) are counted in ``tally`` first.
    """
    for reason, n in raw.dropped.items():
        tally.add(reason, n)
    items: list[T] = []
    for index, row in enumerate(raw.rows):
        origin = raw.origin(index)
        try:
            produced = parse(row, origin)
        except RowProblem as problem:
            if not skip_invalid:
                raise row_error(origin, problem) from None
            tally.add(problem.reason)
            continue
        if not produced:
            tally.add(no_item_reason)
        for item in produced:
            try:
                check(item)
            except RowProblem as problem:
                if not skip_invalid:
                    raise row_error(origin_of(item), problem) from None
                tally.add(problem.reason)
            else:
                items.append(item)
    return items
