"""The closing note of ``preftune reproduce all``: every claim of every paper with its verdict, and the gold
evaluator's own held-out accuracy (:mod:`preftune.reproduce.gold`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from preftune.reproduce.report import markdown_table
from preftune.reproduce.verdicts import Interval


def gold_line(results: Mapping[str, Any]) -> str:
    """``gold evaluator: held-out accuracy 0.620 [0.551, 0.684] on 200 pairs (above chance)``, or ``—``."""
    gold = results.get("gold")
    if not gold:
        return "—"
    accuracy = gold["held_out_accuracy"]
    nan = float("nan")
    interval = Interval(*(nan if accuracy[k] is None else accuracy[k] for k in ("estimate", "low", "high")))
    standing = "above chance" if gold["above_chance"] else "at chance"
    return f"held-out accuracy {interval.text()} on {gold['held_out_pairs']} pairs ({standing})"


def closing_note(everything: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: per paper, a table of its claims and verdicts, and its gold evaluator's accuracy."""
    parts = ["# Reproductions: every claim and its verdict", ""]
    for paper, results in everything.items():
        rows = [(claim["title"], claim["verdict"] or "n/a (lemma)") for claim in results["claims"].values()]
        parts += [
            f"## {paper} (scale `{results['scale']}`, {results['seconds']['total'] / 60:.1f} minutes)",
            "",
            f"Gold evaluator: {gold_line(results)}.",
            "",
            markdown_table(["claim", "verdict"], rows),
            "",
        ]
    return "\n".join(parts)
