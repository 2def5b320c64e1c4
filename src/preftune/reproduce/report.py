"""A reproduction's report: one Markdown section per claim, each ending in a computed verdict.

A :class:`ClaimSection` is built by the study that measured it (or by :func:`not_run_section` when
the study was not run) and rendered by :func:`render_section`; :func:`render_report` puts them
under a title, a summary table and the settings.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from preftune.reproduce.verdicts import NOT_RUN, VERDICTS


@dataclass(frozen=True)
class ClaimSection:
    """One claim (or a measured lemma) of a paper, as the report shows it.

    Attributes:
        key: short identifier (``far_peak``), used in ``results.json``.
        title: the section heading.
        paper: what the paper reports, paraphrased.
        measured: Markdown body: setup, tables of estimates with 95% intervals, the rule applied.
        verdict: one of :data:`preftune.reproduce.verdicts.VERDICTS`, or ``None`` for a section that
            measures without testing a claim (a lemma: a theorem, true by proof).
        reason: one sentence, computed from the numbers, saying why the verdict is what it is.
        figures: PNG file names, relative to the report's folder.
        data: the numbers behind the section, for ``results.json``.
    """

    key: str
    title: str
    paper: str
    measured: str
    verdict: str | None
    reason: str
    figures: tuple[str, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.verdict is not None and self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS} or None, got {self.verdict!r}")

    def to_json(self) -> dict[str, Any]:
        """The section's verdict, reason, figures and numbers."""
        return {
            "title": self.title,
            "verdict": self.verdict,
            "reason": self.reason,
            "figures": list(self.figures),
            "data": self.data,
        }


def not_run_section(key: str, title: str, paper: str, why: str) -> ClaimSection:
    """The section of a claim whose study was not run: verdict ``not run``, with the reason."""
    return ClaimSection(key, title, paper, f"_Not run: {why}_", NOT_RUN, why)


def verdict_line(section: ClaimSection) -> str:
    """``**Verdict: holds.** reason`` (or ``**Verdict: n/a** ...`` for a section that tests no claim)."""
    if section.verdict is None:
        return f"**Verdict: n/a** (nothing to refute: a lemma holds by proof). {section.reason}"
    return f"**Verdict: {section.verdict}.** {section.reason}"


def render_section(section: ClaimSection, level: int = 2) -> str:
    """The section as Markdown: heading, the paper's claim, our measurement, figures, verdict."""
    parts = [
        f"{'#' * level} {section.title}",
        f"**What the paper reports.** {section.paper}",
        f"**What we measured.**\n\n{section.measured.strip()}",
    ]
    parts += [f"![{name}]({name})" for name in section.figures]
    parts.append(verdict_line(section))
    return "\n\n".join(parts) + "\n"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A pipe table; cells are converted with ``str`` (``|`` escaped)."""

    def cells(values: Sequence[Any]) -> str:
        """One row."""
        return "| " + " | ".join(str(v).replace("|", "\\|") for v in values) + " |"

    lines = [cells(header), "|" + "|".join("---" for _ in header) + "|"]
    lines += [cells(row) for row in rows]
    return "\n".join(lines)


def render_report(title: str, preamble: str, sections: Sequence[ClaimSection], appendix: str = "") -> str:
    """The whole report: title, preamble, a verdict table, every section, then the appendix."""
    summary = markdown_table(
        ["claim", "verdict"], [(s.title, s.verdict if s.verdict is not None else "n/a (lemma)") for s in sections]
    )
    body = [f"# {title}", preamble.strip(), "## Verdicts at a glance", summary]
    body += [render_section(section).strip() for section in sections]
    if appendix.strip():
        body.append(appendix.strip())
    return "\n\n".join(body) + "\n"


def machine() -> str:
    """Where and with what a report was written: versions, the CPU, and the training runs' processes (timings
    depend on all of them)."""
    import torch

    from preftune import __version__
    from preftune.modeling.precision import cpu_model
    from preftune.reproduce.workers import current_workers

    workers = current_workers()
    return (
        f"preftune {__version__}, torch {torch.__version__}, Python {platform.python_version()}, {cpu_model()} with "
        f"{os.cpu_count()} CPUs, training runs in {workers} process{'es' if workers > 1 else ''}"
    )
