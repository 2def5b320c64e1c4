"""``preftune win-rate``: a model's completions against a baseline's with a pairwise judge (docs/methods.md §6).

Both files are JSON Lines with a ``prompt`` and a ``completion`` per row, or ``completions`` (a list,
as ``preftune generate`` writes; the first is taken). Rows are matched by prompt. Everything is
checked before the judge is built; the report gives the win rate and AlpacaEval 2's
length-controlled win rate (fractions in [0, 1]) with bootstrap intervals. Exit 3
(:data:`~preftune.errors.EXIT_INCOMPLETE`) when comparisons failed: they are left out of the rates.
"""

from __future__ import annotations

import argparse
from typing import Any

from preftune.cli.keys import Setting, Settings, add_settings
from preftune.cli.outputs import check_distinct, check_output_file
from preftune.errors import IncompleteRun, PreftuneError

SETTINGS = Settings(
    "win-rate",
    (
        Setting("outputs", flag="--outputs", required=True),
        Setting("baseline", flag="--baseline", required=True),
        Setting("judge", flag="--judge", required=True),
        Setting("store", flag="--store"),
        Setting("out", flag="--out", help="write the report as JSON here"),
        Setting("eval.bootstrap", 2000, "--bootstrap"),
        Setting("eval.lc_bootstrap", 200, "--lc-bootstrap"),
        Setting("seed", 0, "--seed", help="bootstrap seed"),
    ),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "win-rate",
        help="win rate and length-controlled win rate of completions against a baseline's, with a judge",
        description=(
            "Compares each prompt's completion in outputs with the baseline's in baseline (matched by prompt), "
            "the judge asked in both orders (disagreement = tie, ties count half). Reports the win rate and "
            "AlpacaEval 2's length-controlled win rate (length_controlled_minimal), as fractions with bootstrap "
            "intervals over prompts."
        ),
        epilog="example: preftune win-rate outputs=tuned.jsonl baseline=base.jsonl judge=longer out=report.json",
    )
    add_settings(parser, SETTINGS)
    parser.set_defaults(run=run_win_rate)


def run_win_rate(args: argparse.Namespace) -> int:
    from preftune.evaluation.completions import read_completions

    for flag, value in (("eval.bootstrap", args.bootstrap), ("eval.lc_bootstrap", args.lc_bootstrap)):
        if value < 0:
            raise PreftuneError(f"{flag} must be at least 0, not {value}")
    for flag, path in (("out", args.out), ("store", args.store)):
        if path is not None:
            check_output_file(path, flag)
    check_distinct({"outputs": args.outputs, "baseline": args.baseline, "out": args.out, "store": args.store})
    outputs = read_completions(args.outputs, "outputs=")
    baseline = read_completions(args.baseline, "baseline=")
    missing = [key for key in outputs if key not in baseline]
    if missing:
        raise PreftuneError(
            f"{len(missing)} of {len(outputs)} prompts of outputs={args.outputs} are not in "
            f"baseline={args.baseline}, e.g. {missing[0][:80]}"
        )

    from preftune.evaluation.generative import length_controlled_win_rate, win_rate, win_scores
    from preftune.files import strict_json, write_json_atomic
    from preftune.judging.labellers import prompt_text
    from preftune.judging.specs import make_judge
    from preftune.judging.store import VerdictStore, failed_comparisons

    store = VerdictStore(args.store) if args.store is not None else None  # not a store: refused before a call
    keys = list(outputs)
    prompts = [prompt_text(outputs[k][0]) for k in keys]
    model_texts, base_texts = [outputs[k][1] for k in keys], [baseline[k][1] for k in keys]
    try:
        judge = make_judge(args.judge)
        scores = win_scores(judge, prompts, model_texts, base_texts, store=store, progress=True)
    finally:
        if store is not None:
            store.close()
    lengths, base_lengths = [len(t) for t in model_texts], [len(t) for t in base_texts]
    raw = win_rate(scores, lengths, base_lengths, bootstrap=args.bootstrap, seed=args.seed)
    lc = length_controlled_win_rate(scores, lengths, base_lengths, bootstrap=args.lc_bootstrap, seed=args.seed)
    print(_summary(raw, lc))
    if args.out is not None:
        report = {
            "judge": judge.identity(),
            "outputs": str(args.outputs),
            "baseline": str(args.baseline),
            "seed": args.seed,
            "win_rate": strict_json(vars(raw)),
            "length_controlled": strict_json(vars(lc)),
        }
        write_json_atomic(args.out, report)
    if raw.failed:
        raise IncompleteRun(failed_comparisons(raw.failed, len(keys), "the rates", args.store))
    return 0


def _summary(raw: Any, lc: Any) -> str:
    return "\n".join(
        [
            f"win rate     {raw.win_rate:.3f} [{raw.ci_low:.3f}, {raw.ci_high:.3f}]  (ties count half)",
            f"LC win rate  {lc.describe()}  (AlpacaEval 2, minimal GLM)",
            f"n {raw.n}: {raw.wins} wins, {raw.ties} ties, {raw.losses} losses; {raw.failed} failed",
            f"mean length  {raw.mean_length:.1f} characters (baseline {raw.baseline_mean_length:.1f})",
        ]
    )
