"""``preftune rank``: rank each prompt's completions with a pairwise judge (P4's IPR) into
ranked rows and preference pairs that ``preftune train`` reads.

Every input and output is checked before the first judge call. Exit 0 when every comparison got a
verdict; 3 (:data:`~preftune.errors.EXIT_INCOMPLETE`) when some failed (the outputs are written, the
verdicts kept, and a rerun asks only the failed calls) or the judge's endpoint could not be reached."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console

from preftune.cli.keys import Setting, Settings, add_settings
from preftune.cli.outputs import check_distinct, check_output_file
from preftune.errors import IncompleteRun, PreftuneError
from preftune.judging.specs import make_judge

SETTINGS = Settings(
    "rank",
    (
        Setting("input", flag="--input", required=True),
        Setting("judge", "longer", "--judge"),
        Setting("method", "ipr", "--method"),
        Setting("score_model", flag="--score-model"),
        Setting("out", flag="--out", required=True, help="ranked rows (prompt, completions, ranks)"),
        Setting("pairs", flag="--pairs"),
        Setting("data.pairing", "best_vs_worst", "--pairing"),
        Setting("compare", flag="--compare"),
        Setting(
            "store",
            flag="--store",
            help="verdict store (SQLite; default: out with .verdicts.sqlite): a rerun asks no call twice",
        ),
    ),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "rank",
        help="rank N completions per prompt with a pairwise judge (IPR) into rankings and pairs (P4)",
        description=(
            "Ranks each prompt's completions by iterative pairwise ranking (binary insertion; the judge "
            "asked in both orders, a disagreement is a tie) or round robin. Verdicts are kept in SQLite as "
            "they arrive: a killed ranking resumes with no call repeated. Exit 0 when every comparison got a "
            "verdict, 3 when some failed (a rerun asks only those) or the judge could not be reached."
        ),
        epilog="example: preftune rank input=generated.jsonl judge=longer out=out/ranked.jsonl pairs=out/pairs.jsonl",
    )
    add_settings(parser, SETTINGS)
    parser.set_defaults(run=run_rank)


def run_rank(args: argparse.Namespace) -> int:
    from preftune.judging.rank_file import rank_rows, read_candidates, read_rankings, write_outputs
    from preftune.judging.store import VerdictStore
    from preftune.progress import StepProgress

    if not args.input.is_file():
        raise PreftuneError(f"input={args.input}: no such file")
    if (args.method == "score") != (args.score_model is not None):
        raise PreftuneError("method=score ranks by a reward model: give both method=score and score_model=PATH")
    store_path = None if args.method == "score" else args.store or args.out.with_suffix(".verdicts.sqlite")
    _check_paths(args, store_path)
    other = read_rankings(args.compare) if args.compare is not None else None  # checked before any work
    if args.method == "score":
        return run_score_rank(args, other)
    judge = make_judge(args.judge)
    rows = read_candidates(args.input)  # every row checked before the first call
    store = VerdictStore(store_path)  # a folder or a file that is not a store is refused here
    console = Console(stderr=True, soft_wrap=True)
    try:
        with StepProgress(len(rows), description="rank", console=console) as bar:
            report = rank_rows(rows, judge, method=args.method, store=store, progress=lambda: bar.advance({}))
    finally:
        store.close()
    write_outputs(rows, report, args.out, args.pairs, args.pairing)
    _print(console, rows, report, other)
    failures = report.failures(store_path)
    if failures:
        raise IncompleteRun(failures)
    return 0


def _check_paths(args: argparse.Namespace, store: Path | None) -> None:
    """The outputs (and the store) writable and distinct from each other and the input, before any work."""
    check_output_file(args.out, "out")
    if args.pairs is not None:
        check_output_file(args.pairs, "pairs")
    if store is not None:
        check_output_file(store, "store")
    check_distinct({"input": args.input, "out": args.out, "pairs": args.pairs, "store": store})


def _print(console: Console, rows: list, report: Any, other: dict[str, list[int]] | None) -> None:
    from preftune.judging.rank_file import compare_rankings

    console.print(str(report), highlight=False)
    if other is not None:
        console.print(str(compare_rankings(rows, report, other)), highlight=False)


def run_score_rank(args: argparse.Namespace, other: dict[str, list[int]] | None) -> int:
    """``method=score``: every row checked, then each prompt's completions ranked by the reward model."""
    from preftune.judging.rank_file import read_candidates, score_rank_rows, write_outputs
    from preftune.progress import StepProgress
    from preftune.reward import RewardModel

    rows = read_candidates(args.input)  # every row checked before the model loads
    model = RewardModel(args.score_model)
    console = Console(stderr=True, soft_wrap=True)
    with StepProgress(len(rows), description="rank", console=console) as bar:
        report = score_rank_rows(rows, model.score, progress=lambda: bar.advance({}))
    write_outputs(rows, report, args.out, args.pairs, args.pairing)
    _print(console, rows, report, other)
    return 0
