"""Judge prompt templates: reading, filling, and keeping a response from steering the verdict.

A template is a shipped name (``"pairwise"``, ``"alpaca_eval"``: ``templates/<name>.txt``) or the
path of a text file, with the placeholders ``{instruction}``, ``{output_1}`` and ``{output_2}``,
filled in one pass (a placeholder inside an inserted text is left as it is). It encloses each text
in XML-like tags; every tag the template uses (``<response_1>``, ``</response_1>``, ...) is
neutralised inside the inserted texts (its ``<`` becomes ``&lt;``), so a response cannot close its
own delimiter and pose as the judge's instructions.

A template may begin with header lines, removed from the prompt:

- ``#! answers: a b`` — the two answers of the ``short`` format (first better, second better;
  default "1" and "2"). The local judge (answer token log-probs) and the API judge (parsing, or
  log-probs) read them from here.
- ``#! format: mt_bench`` — how the judge writes its verdict: ``short`` (the default), ``mt_bench``,
  ``arena_hard`` or ``json`` (:mod:`preftune.judging.verdicts`). The shipped templates of the same
  names ask for each.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from preftune.errors import PreftuneError
from preftune.judging.verdicts import FORMATS

PLACEHOLDERS = ("instruction", "output_1", "output_2")
DEFAULT_ANSWERS = ("1", "2")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_TAG = re.compile(r"<\s*/?\s*([A-Za-z_][\w.-]*)[^<>]*>")
# a header line and the blank lines after it (as the first version's header took them: the text after
# it, which keys the API judge's verdict store, stays what it was)
_HEADER = re.compile(r"\A#!\s*([A-Za-z_]+)\s*:[ \t]*([^\n]*?)[ \t]*(?:\n(?:[ \t]*\n)*|\Z)")


@dataclass(frozen=True)
class JudgeTemplate:
    """A template's prompt text, the two answers it asks for (first better, second better), and the
    format the judge writes its verdict in."""

    text: str
    answers: tuple[str, str] = DEFAULT_ANSWERS
    format: str = "short"

    def fill(self, instruction: str, first: str, second: str) -> str:
        return fill_template(self.text, instruction, first, second)


def shipped_templates() -> list[str]:
    """The names of the templates shipped with preftune (``templates/<name>.txt``)."""
    folder = resources.files("preftune.judging") / "templates"
    return sorted(entry.name.removesuffix(".txt") for entry in folder.iterdir() if entry.name.endswith(".txt"))


def load_template(template: str | Path) -> JudgeTemplate:
    """A template by shipped name or path, its header lines parsed and removed.

    Raises :class:`PreftuneError` when it is neither, lacks a placeholder, or has a bad header line.
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
    header, text = _read_header(text, template)
    missing = [name for name in PLACEHOLDERS if "{" + name + "}" not in text]
    if missing:
        raise PreftuneError(f"judge template '{template}' lacks the placeholder(s) {', '.join(missing)}")
    return JudgeTemplate(text, **header)


def _read_header(text: str, template: str | Path) -> tuple[dict[str, Any], str]:
    """The ``#! key: value`` lines at the top (``answers``, ``format``) and the text after them."""
    found: dict[str, Any] = {}
    while header := _HEADER.match(text):
        key, value, text = header.group(1).lower(), header.group(2), text[header.end() :]
        where = f"judge template '{template}': '#! {key}:'"
        if key in found:
            raise PreftuneError(f"{where} is given twice")
        if key == "answers":
            parts = value.split()
            if len(parts) != 2 or parts[0].lower() == parts[1].lower():
                raise PreftuneError(f"{where} takes two different answers (first better, second better), not {value!r}")
            found["answers"] = (parts[0], parts[1])
        elif key == "format":
            if value not in FORMATS:
                raise PreftuneError(f"{where} must be one of {', '.join(FORMATS)}, not {value!r}")
            found["format"] = value
        else:
            raise PreftuneError(f"judge template '{template}': unknown header '#! {key}:' (known: answers, format)")
    if "answers" in found and found.get("format", "short") != "short":
        # the reasoning formats have fixed markers ([[A]], [[A>B]], "winner"): answers would be ignored
        raise PreftuneError(
            f"judge template '{template}': '#! answers:' belongs to the short format, not {found['format']}"
        )
    return found, text


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
