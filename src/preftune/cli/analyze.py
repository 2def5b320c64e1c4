"""``preftune analyze gradients``: P1's gradient analysis of any objectives, as PNG, CSV and JSON."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from preftune.cli.keys import Setting, Settings, add_settings
from preftune.errors import PreftuneError

DEFAULT_OBJECTIVES = "mle,ul,exmate,dpo,dpo+exmate"


def split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses: ``"dpo(beta=0.1, average=True),mle"`` has two items."""
    items, depth, current = [], 0, []
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    if any(not item for item in items):
        raise PreftuneError(f"objectives={text} has an empty item; separate objectives with single commas")
    return items


GRADIENTS = Settings(
    "analyze gradients",
    (
        Setting("objectives", DEFAULT_OBJECTIVES, "--objectives"),
        Setting("out", Path("out/gradients"), "--out", help="output folder (created)"),
    ),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "analyze",
        help="analyse objectives: which tokens they push up or down, and how hard (P1)",
        description="Analyses of objectives. 'gradients' is P1's gradient analysis.",
    )
    kinds = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    gradients = kinds.add_parser(
        "gradients",
        help="plot per-token gradient weights of objectives (PNG, CSV, JSON)",
        description=(
            "For each objective, compute by autograd the weight with which it pushes up a good token "
            "and pushes down a bad one, and plot: weight against token probability; DPO's weight "
            "against the margin; the gradient in logit space on the target token and the rest of the "
            "vocabulary; and the net push on tokens shared by the good and bad responses."
        ),
        epilog="example: preftune analyze gradients objectives='mle,ul,exmate,dpo,dpo+exmate' out=out/gradients",
    )
    add_settings(gradients, GRADIENTS)
    gradients.set_defaults(run=run_gradients)


def run_gradients(args: argparse.Namespace) -> int:
    from preftune.analysis import write_gradient_report

    specs = split_top_level(args.objectives)
    if args.out.exists() and not args.out.is_dir():
        raise PreftuneError(f"out={args.out} exists and is not a folder")
    console = Console()
    with console.status(f"analysing {len(specs)} objectives"):
        report = write_gradient_report(specs, args.out)
    for line in report.headline:
        console.print(f"- {line}", soft_wrap=True)
    console.print(f"wrote {len(report.files)} files to {args.out}/:")
    for path in report.files:
        console.print(f"  {path}", soft_wrap=True)
    return 0
