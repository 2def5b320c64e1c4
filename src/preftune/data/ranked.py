"""Ranked completions -> preference pairs (and the rows read into ranked groups).

Two row shapes give a prompt with several ranked or scored completions:

- columns ``prompt``, ``completions`` and ``ranks`` (0 = best, lower is better) or ``scores``
  (higher is better); a rank or score of ``null`` leaves that completion unranked;
- OpenAssistant message trees (``{"prompt": {"text", "role": "prompter", "replies": [...]}}``),
  whose assistant replies carry a human ``rank`` (0 = best). Every ranked group of assistant
  replies in the tree gives pairs, the prompt being the conversation down to it
  (``tree_turns="all"``), or only the replies to the root prompt (``tree_turns="first"``).
  Deleted messages are left out.

Both are first read into :class:`RankedGroup`\\ s (:func:`read_ranked`, :func:`read_tree`): a
prompt, its completions and their values. The pair parsers here and the group parser of
:mod:`preftune.data.grouped` start from them.

``pairing`` turns one ranked group into pairs: ``"best_vs_worst"`` (one pair: the best against
the worst) or ``"all"`` (every ordered pair, the better one as chosen). Tied completions never
make a pair, so a group whose ranks are all equal (or missing) gives none; ``min_gap`` raises
that bar: two completions make a pair only when their values differ by more than it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from preftune.data.examples import Message, Origin, PreferenceExample, Text
from preftune.data.validation import RowProblem, as_message, as_messages, as_text, is_messages, type_name
from preftune.errors import PreftuneError

PAIRINGS = ("best_vs_worst", "all")
TREE_TURNS = ("all", "first")


def check_min_gap(min_gap: float) -> None:
    """Refuse a negative or non-finite gap (it comes from the config, so a PreftuneError)."""
    if isinstance(min_gap, bool) or not isinstance(min_gap, int | float) or not math.isfinite(min_gap) or min_gap < 0:
        raise PreftuneError(f"the minimum value gap between paired completions must be a number >= 0, not {min_gap!r}")


def rank_pairs(
    values: list[float | None], *, lower_is_better: bool, pairing: str, min_gap: float = 0.0
) -> list[tuple[int, int]]:
    """Index pairs ``(better, worse)`` from ranks or scores; ``None`` values and ties give no pair.

    ``best_vs_worst``: ``[(best, worst)]`` (the first of tied bests, the first of tied worsts), or
    ``[]`` if every ranked value is equal. ``all``: every ``(i, j)`` with ``i`` strictly better
    than ``j``, ordered by ``i`` then ``j``. With ``min_gap`` > 0, only values that differ by more
    than ``min_gap`` (in the values' own units: ranks or scores) make a pair.
    """
    check_min_gap(min_gap)
    key = (lambda v: v) if lower_is_better else (lambda v: -v)
    ranked = [(i, key(v)) for i, v in enumerate(values) if v is not None]
    if pairing == "all":
        # `a < b` as well as the gap: with min_gap 0 the two agree, and keeping it spells out "strictly better".
        return [(i, j) for i, a in ranked for j, b in ranked if a < b and b - a > min_gap]
    if pairing != "best_vs_worst":
        raise ValueError(f"unknown pairing {pairing!r}")
    if not ranked:
        return []
    best = min(ranked, key=lambda item: item[1])
    worst = max(ranked, key=lambda item: item[1])
    return [(best[0], worst[0])] if best[1] < worst[1] and worst[1] - best[1] > min_gap else []


@dataclass(frozen=True)
class RankedGroup:
    """One prompt's completions with their ranks or scores, as read from a row (or a turn of a tree).

    Attributes:
        prompt: the prompt (a string, or the messages down to the ranked turn).
        completions: every completion read, ranked or not.
        values: each completion's rank or score; None for an unranked one.
        lower_is_better: True for ranks (0 = best), False for scores.
        fields: each completion's field in the row, for error messages (``completions[2]``,
            ``prompt.replies[1]``).
        turn: for a tree, the number of the ranked (assistant) turn in the conversation; 0 for a flat row.
        node: for a tree, the field of the message the completions reply to (``prompt``,
            ``prompt.replies[0].replies[1]``); "" for a flat row.
    """

    prompt: Text
    completions: list[Text]
    values: list[float | None]
    lower_is_better: bool
    fields: list[str]
    turn: int = 0
    node: str = ""


def _number(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RowProblem(field, f"expected a number, got {type_name(value)}")
    return float(value)


def _completion(value: Any, field: str, conversational: bool) -> Text:
    if not conversational:
        return as_text(value, field)
    if isinstance(value, dict):  # one message rather than a list of them
        return [as_message(value, field)]
    return as_messages(value, field)


def read_ranked(row: dict[str, Any]) -> RankedGroup:
    """The prompt, completions and ranks (or scores) of a row with ``prompt``, ``completions``, ``ranks``/``scores``."""
    conversational = is_messages(row.get("prompt"))
    prompt: Text = as_messages(row["prompt"], "prompt") if conversational else as_text(row.get("prompt"), "prompt")
    completions = row.get("completions")
    if not isinstance(completions, list):
        raise RowProblem("completions", f"expected a list of completions, got {type_name(completions)}")
    key = "ranks" if row.get("ranks") is not None else "scores"
    raw_values = row.get(key)
    if not isinstance(raw_values, list):
        raise RowProblem("ranks", f"expected a list of ranks or scores, got {type_name(raw_values)}")
    if len(raw_values) != len(completions):
        raise RowProblem(key, "not one per completion", f"{len(raw_values)} {key}, {len(completions)} completions")
    values = [_number(v, f"{key}[{i}]") for i, v in enumerate(raw_values)]
    fields = [f"completions[{i}]" for i in range(len(completions))]
    texts = [_completion(c, field, conversational) for c, field in zip(completions, fields, strict=True)]
    return RankedGroup(prompt, texts, values, lower_is_better=key == "ranks", fields=fields)


def parse_ranked(row: dict[str, Any], origin: Origin, *, pairing: str, min_gap: float = 0.0) -> list[PreferenceExample]:
    """Pairs from a row with ``prompt``, ``completions`` and ``ranks`` (or ``scores``)."""
    group = read_ranked(row)
    texts = group.completions
    pairs = rank_pairs(group.values, lower_is_better=group.lower_is_better, pairing=pairing, min_gap=min_gap)
    return [
        PreferenceExample(
            group.prompt, texts[i], texts[j], Origin(origin.source, origin.row, f"completions {i} vs {j}")
        )
        for i, j in pairs
    ]


def _tree_message(node: Any, field: str) -> Message:
    if not isinstance(node, dict):
        raise RowProblem(field, f"expected a message tree node, got {type_name(node)}")
    return as_message({"role": node.get("role"), "content": node.get("text")}, field)


def read_tree(row: dict[str, Any], *, tree_turns: str = "all") -> list[RankedGroup]:
    """The ranked groups of an OpenAssistant message tree (the row's ``prompt`` is the root message).

    One group per user turn that has assistant replies (deleted ones left out; they may all be
    unranked), depth first in the tree's order; with ``tree_turns="first"`` only the root's.
    Fields name replies by their index in the file, deleted ones included.
    """
    groups: list[RankedGroup] = []

    def walk(node: dict[str, Any], history: list[Message], field: str) -> None:
        history = [*history, _tree_message(node, field)]
        replies = [
            (f"{field}.replies[{i}]", r)
            for i, r in enumerate(node.get("replies") or [])
            if isinstance(r, dict) and not r.get("deleted")
        ]
        if history[-1]["role"] == "user":
            messages: list[Text] = [[_tree_message(r, where)] for where, r in replies]
            values = [_number(r.get("rank"), f"{where}.rank") for where, r in replies]
            if replies:
                fields = [where for where, _ in replies]
                groups.append(RankedGroup(history, messages, values, True, fields, len(history) + 1, field))
            if tree_turns == "first":
                return
        for where, reply in replies:
            walk(reply, history, where)

    walk(row["prompt"], [], "prompt")
    return groups


def parse_tree(
    row: dict[str, Any], origin: Origin, *, pairing: str, tree_turns: str = "all", min_gap: float = 0.0
) -> list[PreferenceExample]:
    """Pairs from an OpenAssistant message tree (the row's ``prompt`` is the root message)."""
    examples: list[PreferenceExample] = []
    for group in read_tree(row, tree_turns=tree_turns):
        for i, j in rank_pairs(group.values, lower_is_better=True, pairing=pairing, min_gap=min_gap):
            part = f"turn {group.turn}, replies {i} vs {j}"
            chosen, rejected = group.completions[i], group.completions[j]
            examples.append(PreferenceExample(group.prompt, chosen, rejected, Origin(origin.source, origin.row, part)))
    return examples
