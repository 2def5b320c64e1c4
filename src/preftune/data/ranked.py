"""Ranked completions -> preference pairs.

Two row shapes give a prompt with several ranked or scored completions:

- columns ``prompt``, ``completions`` and ``ranks`` (0 = best, lower is better) or ``scores``
  (higher is better); a rank or score of ``null`` leaves that completion unranked;
- OpenAssistant message trees (``{"prompt": {"text", "role": "prompter", "replies": [...]}}``),
  whose assistant replies carry a human ``rank`` (0 = best). Every ranked group of assistant
  replies in the tree gives pairs, the prompt being the conversation down to it
  (``tree_turns="all"``), or only the replies to the root prompt (``tree_turns="first"``).
  Deleted messages are left out.

``pairing`` turns one ranked group into pairs: ``"best_vs_worst"`` (one pair: the best against
the worst) or ``"all"`` (every ordered pair, the better one as chosen). Tied completions never
make a pair, so a group whose ranks are all equal (or missing) gives none.
"""

from __future__ import annotations

from typing import Any

from preftune.data.examples import Message, Origin, PreferenceExample, Text
from preftune.data.validation import RowProblem, as_message, as_messages, as_text, is_messages, type_name

PAIRINGS = ("best_vs_worst", "all")
TREE_TURNS = ("all", "first")


def rank_pairs(values: list[float | None], *, lower_is_better: bool, pairing: str) -> list[tuple[int, int]]:
    """Index pairs ``(better, worse)`` from ranks or scores; ``None`` values and ties give no pair.

    ``best_vs_worst``: ``[(best, worst)]`` (the first of tied bests, the first of tied worsts), or
    ``[]`` if every ranked value is equal. ``all``: every ``(i, j)`` with ``i`` strictly better
    than ``j``, ordered by ``i`` then ``j``.
    """
    key = (lambda v: v) if lower_is_better else (lambda v: -v)
    ranked = [(i, key(v)) for i, v in enumerate(values) if v is not None]
    if pairing == "all":
        return [(i, j) for i, a in ranked for j, b in ranked if a < b]
    if pairing != "best_vs_worst":
        raise ValueError(f"unknown pairing {pairing!r}")
    if not ranked:
        return []
    best = min(ranked, key=lambda item: item[1])
    worst = max(ranked, key=lambda item: item[1])
    return [(best[0], worst[0])] if best[1] < worst[1] else []


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


def parse_ranked(row: dict[str, Any], origin: Origin, *, pairing: str) -> list[PreferenceExample]:
    """Pairs from a row with ``prompt``, ``completions`` and ``ranks`` (or ``scores``)."""
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
    texts = [_completion(c, f"completions[{i}]", conversational) for i, c in enumerate(completions)]
    return [
        PreferenceExample(prompt, texts[i], texts[j], Origin(origin.source, origin.row, f"completions {i} vs {j}"))
        for i, j in rank_pairs(values, lower_is_better=key == "ranks", pairing=pairing)
    ]


def _tree_message(node: Any, field: str) -> Message:
    if not isinstance(node, dict):
        raise RowProblem(field, f"expected a message tree node, got {type_name(node)}")
    return as_message({"role": node.get("role"), "content": node.get("text")}, field)


def parse_tree(
    row: dict[str, Any], origin: Origin, *, pairing: str, tree_turns: str = "all"
) -> list[PreferenceExample]:
    """Pairs from an OpenAssistant message tree (the row's ``prompt`` is the root message)."""
    examples: list[PreferenceExample] = []

    def walk(node: dict[str, Any], history: list[Message], field: str) -> None:
        history = [*history, _tree_message(node, field)]
        replies = [r for r in node.get("replies") or [] if isinstance(r, dict) and not r.get("deleted")]
        if history[-1]["role"] == "user":
            messages = [_tree_message(r, f"{field}.replies[{i}]") for i, r in enumerate(replies)]
            values = [_number(r.get("rank"), f"{field}.replies[{i}].rank") for i, r in enumerate(replies)]
            for i, j in rank_pairs(values, lower_is_better=True, pairing=pairing):
                part = f"turn {len(history) + 1}, replies {i} vs {j}"
                examples.append(
                    PreferenceExample(history, [messages[i]], [messages[j]], Origin(origin.source, origin.row, part))
                )
            if tree_turns == "first":
                return
        for i, reply in enumerate(replies):
            walk(reply, history, f"{field}.replies[{i}]")

    walk(row["prompt"], [], "prompt")
    return examples
