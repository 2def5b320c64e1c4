"""``preftune objectives``: list the objective terms, their defaults and what they read."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import warnings

from rich.console import Console
from rich.table import Table


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "objectives",
        help="list the objective terms and their defaults, or check an expression",
        description=(
            "List every objective term with its default hyper-parameters and what it needs, or, "
            "given an expression such as 'dpo + 0.5*exmate(lam=0.1)', check it and show it in full."
        ),
    )
    parser.add_argument("expression", nargs="?", help="an objective expression to check")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from preftune.objectives import ALIASES, TERMS, parse  # torch: only for this command, not every start-up

    console = Console()
    if args.expression:
        objective = parse(args.expression)
        console.print(objective.describe(), soft_wrap=True)
        needs = [
            what
            for what, flag in (
                ("rejected responses", objective.needs_rejected),
                ("a reference model", objective.needs_reference),
                ("per-token log-probs", objective.needs_token_logps),
                ("the reference's per-token log-probs (a live reference)", objective.needs_reference_tokens),
                ("per-token log Σ_v π(v)² (WPO)", objective.needs_collision),
                ("mismatched pairs scored live (its KL estimate)", objective.needs_mismatched),
            )
            if flag
        ]
        console.print(f"reads {objective.record_type.__name__}; needs {', '.join(needs) or 'chosen responses only'}")
        if objective.sorts_batch:
            console.print("each value depends on the whole batch (sorted over it): its mean is what it means")
        return 0
    table = Table(title="objective terms (compose with +, weight with *)")
    for column in ("term", "defaults", "reads", "what it is"):
        table.add_column(column)
    for name, cls in TERMS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # listing defaults is not using mate
            term = cls()
        defaults = ", ".join(f"{f.name}={getattr(term, f.name)!r}" for f in dataclasses.fields(term))
        reads = "pairs" if cls.record_type.__name__ == "PairRecord" else "sample groups"
        if term.needs_reference:
            reads += " + reference"
        if cls.record_type.__name__ == "PairRecord" and term.needs_rejected and term.fits_unpaired:
            reads += " (unpaired ok)"
        if term.sorts_batch:
            reads += "; batch-sorted"
        summary = re.sub(r"^``\w+``: ", "", (inspect.getdoc(cls) or "").splitlines()[0])
        aliases = [alias for alias, target in ALIASES.items() if target == name]  # other names, the same term
        shown = f"{name} (alias: {', '.join(aliases)})" if aliases else name
        table.add_row(shown, defaults, reads, summary)
    console.print(table)
    return 0
