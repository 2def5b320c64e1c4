"""Judge prompt templates: reading, filling, and keeping a response from steering the verdict.

A template is a shipped name (``"pairwise"``, ``"alpaca_eval"``: ``templates/<name>.txt``) or the
path of a text file, with the placeholders ``{instruction}``, ``{output_1}`` and ``{output_2}``,
filled in one pass (a placeholder inside an inserted text is left as it is). It encloses each text
in XML-like tags; every tag the template uses (``<response_1>``, ``</response_1>``, ...) is
neutralised inside the inserted texts (its ``<`` becomes ``&lt;``), so a response cannot close its
own delimiter and pose as the judge's instructions.

The answers a template asks for are "1" (the first response is better) and "2", unless its first
line declares others: ``#! answers: a b`` (removed from the prompt). Both the local judge (answer
token log-probs) and the API judge (parsing, or log-probs) read them from here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from preftune.errors import PreftuneError

PLACEHOLDERS = ("instruction", "output_1", "output_2")
DEFAULT_ANSWERS = ("1", "2")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_TAG = re.compile(r"<\s*/?\s*([A-Za-z_][\w.-]*)[^<>]*>")
_HEADER = re.compile(r"\A#!\s*answers:\s*(\S+)\s+(\S+)\s*\n")


@dataclass(frozen=True)
class JudgeTemplate:
    """A template's prompt text and the two answers it asks for (first better, second better)."""

    text: str
    answers: tuple[str, str] = DEFAULT_ANSWERS

    def fill(self, instruction: str, first: str, second: str) -> str:
        return fill_template(self.text, instruction, first, second)


def shipped_templates() -> list[str]:
    """The names of the templates shipped with preftune (``templates/<name>.txt``)."""
    folder = resources.files("preftune.judging") / "templates"
    return sorted(entry.name.removesuffix(".txt") for entry in folder.iterdir() if entry.name.endswith(".txt"))


def load_template(template: str | Path) -> JudgeTemplate:
    """A template by shipped name or path, its answers header parsed and removed.

    Raises :class:`PreftuneError` when it is neither, lacks a placeholder, or declares two equal answers.
    """
    text: str | None = None
    if isinstance(template, str) and re.fullmatch(r"[\w-]+", template):
        entry = resources.files("preftune.judging") / "templates" / f"{template}.txt"
        if entry.is_file():
            text = entry.read_text(encoding="utf-8")
    if text is None:
        path = Path(template).expanduser()
        if not path.is_file():
            names = ", ".join(shipped_templates())
            raise PreftuneError(f"judge template '{template}' is neither a shipped template ({names}) nor a file")
        text = path.read_text(encoding="utf-8")
    answers = DEFAULT_ANSWERS
    header = _HEADER.match(text)
    if header:
        answers, text = (header.group(1), header.group(2)), text[header.end() :]
        if answers[0].lower() == answers[1].lower():
            raise PreftuneError(f"judge template '{template}' declares the same answer twice: {answers[0]!r}")
    missing = [name for name in PLACEHOLDERS if "{" + name + "}" not in text]
    if missing:
        raise PreftuneError(f"judge template '{template}' lacks the placeholder(s) {', '.join(missing)}")
    return JudgeTemplate(text, answers)


def read_template(template: str | Path) -> str:
    """The prompt text of a template (see :func:`load_template`)."""
    return load_template(template).text


def template_tags(template_text: str) -> list[str]:
    """The tag names the template delimits its texts with (``instruction``, ``response_1``, ...)."""
    return sorted({match.group(1).lower() for match in _TAG.finditer(template_text)})


def neutralise(text: str, tags: Sequence[str]) -> str:
    """``text`` with every opening or closing tag named in ``tags`` defused (``<`` → ``&lt;``).

    Case and spaces inside the tag do not matter: ``</ RESPONSE_1 >`` is defused as well.
    """
    if not tags:
        return text
    wanted = {tag.lower() for tag in tags}

    def defuse(match: re.Match[str]) -> str:
        whole = match.group(0)
        return "&lt;" + whole[1:] if match.group(1).lower() in wanted else whole

    return _TAG.sub(defuse, text)


def fill_template(template_text: str, instruction: str, first: str, second: str) -> str:
    """The template with its placeholders replaced in one pass, each text's delimiter tags defused."""
    tags = template_tags(template_text)
    values = {
        "instruction": neutralise(instruction, tags),
        "output_1": neutralise(first, tags),
        "output_2": neutralise(second, tags),
    }
    return _PLACEHOLDER.sub(lambda match: values[match.group(1)], template_text).strip()
