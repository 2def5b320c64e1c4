"""Reading a judge's verdict from the text it wrote, in the formats judge prompts ask for.

A template names its format in a header line (``#! format: mt_bench``, see
:mod:`preftune.judging.prompting`); the default is ``short``.

============== ================================================ ===================================
format         what the judge writes (the last marker counts)   verdict
============== ================================================ ===================================
``short``      ``2``, ``(a)``, ``Response 1``, ``[[b]]``         FIRST / SECOND (the two answers)
``mt_bench``   reasoning, then ``[[A]]``, ``[[B]]`` or ``[[C]]``  FIRST / SECOND / TIE
``arena_hard`` reasoning, then ``[[A>>B]]``, ``[[A>B]]``,         FIRST / SECOND / TIE, and a weight:
               ``[[A=B]]``, ``[[B>A]]`` or ``[[B>>A]]``          2 for ``>>``, 1 otherwise
``json``       ``{"winner": "A"}`` (``"B"``, ``"tie"``), alone,   FIRST / SECOND / TIE
               after text or in a fenced block
============== ================================================ ===================================

In the reasoning formats the verdict is the *last* marker in the text: an explanation names both
responses, and may quote a marker while weighing them ("one could say [[A]], but ..."). A text
with no marker, or whose last marker holds no verdict (``{"winner": "maybe"}``), is unreadable:
FAILED, which a caller asks again, unlike a tie, which is a verdict.

The ``short`` format is the one preftune's short-answer templates use: the bare answer, or the
answer named as "Response 1", "Output (a)", "answer: 2" — always the same one (an answer naming
both is unreadable); a ``[[answer]]`` marker, when there is one, decides alone (the last).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

from preftune.judging.base import FAILED, FIRST, SECOND, TIE

FORMATS = ("short", "mt_bench", "arena_hard", "json")
REASONING_FORMATS = frozenset(FORMATS) - {"short"}  # the judge reasons first: the verdict is not the first token
STRONG_WEIGHT = 2.0  # arena_hard's ">>"; Arena-Hard itself counts such a verdict as several battles

_MT_BENCH = re.compile(r"\[\[\s*([ABC])\s*\]\]", re.IGNORECASE)
_ARENA_HARD = re.compile(r"\[\[\s*([AB])\s*(>>|<<|>|<|=)\s*([AB])\s*\]\]", re.IGNORECASE)


@dataclass(frozen=True)
class Reading:
    """One ordered call's verdict read from its text: FIRST, SECOND, TIE or FAILED, and its weight.

    ``weight``: how strongly the judge decided — :data:`STRONG_WEIGHT` for arena_hard's ``>>``, 1
    for any other verdict, 0 for FAILED. Ranking and win rates use only ``answer``; a caller that
    wants graded verdicts reads the weight (:meth:`preftune.judging.api.ApiJudge.grade`).
    """

    answer: int
    weight: float = 1.0


UNREADABLE = Reading(FAILED, 0.0)


def read_verdict(text: str, format: str = "short", answers: Sequence[str] = ("1", "2")) -> Reading:
    """The verdict in a judge's answer ``text`` written in ``format`` (see the module docstring).

    ``answers`` are the two labels of the ``short`` format (first better, second better).
    """
    if format == "short":
        return Reading(parse_verdict(text, answers))
    if format == "mt_bench":
        return _read_mt_bench(text)
    if format == "arena_hard":
        return _read_arena_hard(text)
    if format == "json":
        return _read_json(text)
    raise ValueError(f"unknown verdict format {format!r} (expected one of {', '.join(FORMATS)})")


def parse_verdict(text: str, answers: Sequence[str] = ("1", "2")) -> int:
    """FIRST/SECOND from a short answer; FAILED when it names neither response, or both.

    Accepted: the last ``[[answer]]`` marker when there is one; else the bare answer ("1", "(a)",
    "b."), or the answer named once or more in the text as "Response 1", "Output (a)", "answer: 2",
    "The answer is 2" — always the same one.
    """
    labels = {answers[0].lower(): FIRST, answers[1].lower(): SECOND}
    alternatives = "|".join(re.escape(a) for a in sorted(labels, key=len, reverse=True))
    lowered = text.lower()
    marked = re.findall(rf"\[\[\s*({alternatives})\s*\]\]", lowered)
    if marked:  # a template asking for [[a]] / [[b]] after an explanation: the last marker decides
        return labels[marked[-1]]
    bare = re.fullmatch(rf"\W*\(?\s*({alternatives})\s*\)?\W*", lowered.strip())
    if bare:
        return labels[bare.group(1)]
    lead = r"\b(?:response|output|answer|verdict)(?:\s+is)?\s*:?\s*\(?\s*"
    named = re.findall(rf"{lead}({alternatives})\b", lowered)
    found = {labels[n] for n in named}
    return found.pop() if len(found) == 1 else FAILED


def _read_mt_bench(text: str) -> Reading:
    markers = _MT_BENCH.findall(text)
    if not markers:
        return UNREADABLE
    return Reading({"a": FIRST, "b": SECOND, "c": TIE}[markers[-1].lower()])


def _read_arena_hard(text: str) -> Reading:
    """``[[X op Y]]``: ``=`` a tie; ``>``/``>>`` X wins, ``<``/``<<`` Y wins (both ways round are read)."""
    for left, op, right in reversed(_ARENA_HARD.findall(text)):
        left, right = left.upper(), right.upper()
        if left == right:
            continue  # "[[A>A]]" says nothing; an earlier marker may
        if op == "=":
            return Reading(TIE)
        winner = left if op.startswith(">") else right
        return Reading(FIRST if winner == "A" else SECOND, STRONG_WEIGHT if len(op) == 2 else 1.0)
    return UNREADABLE


def _read_json(text: str) -> Reading:
    """The last JSON object with a ``winner`` key, anywhere in the text (in a fence or after prose)."""
    decoder = json.JSONDecoder()
    last: object = None
    found = False
    end = 0
    for match in re.finditer(r"\{", text):
        if match.start() < end:
            continue  # inside an object already read (a winner object's nested braces)
        try:
            value, stop = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and "winner" in value:
            last, found, end = value["winner"], True, stop
    if not found or not isinstance(last, str):
        return UNREADABLE
    winner = last.strip().lower()
    if winner in ("a", "1", "first"):
        return Reading(FIRST)
    if winner in ("b", "2", "second"):
        return Reading(SECOND)
    if winner in ("tie", "c", "draw", "equal"):
        return Reading(TIE)
    return UNREADABLE
