"""``preftune judge eval``: a pairwise judge's agreement with human labels, beside the
longer-is-better baseline (P4)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from preftune.cli.keys import Setting, Settings, add_settings
from preftune.errors import PreftuneError
from preftune.judging.specs import make_judge

SETTINGS = Settings(
    "judge eval",
    (
        Setting("judge", flag="--judge", required=True),
        Setting(
            "data.eval",
            flag="--data",
            required=True,
            dest="data",
            help="labelled pairs (PandaLM, AlpacaEval, LLMBar; or prompt/chosen/rejected): a file, folder or hub name",
        ),
        Setting("data.format", "auto", "--format"),
        Setting("data.skip_invalid", False, "--skip-invalid"),
        Setting("limit", flag="--limit", help="only the first N pairs (after dropping human ties)"),
        Setting("store", flag="--store", help="verdict store (SQLite) for the judge's ordered calls"),
        Setting("eval.batch_size", flag="--batch-size", help="ordered judge calls at once (default: all)"),
        Setting("out", flag="--out", help="write the report as JSON here"),
        Setting("seed", 0, "--seed", help="seed of the per-pair presentation order"),
    ),
    data_keys=("data.columns.", "data.labels."),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "judge",
        help="measure a pairwise judge against human preference labels (P4)",
        description="Pairwise judges. 'eval' measures a judge's agreement with human labels.",
    )
    kinds = parser.add_subparsers(dest="judge_command", metavar="ACTION", required=True)
    evaluate = kinds.add_parser(
        "eval",
        help="a judge's agreement with human labels, beside the longer-is-better baseline",
        description=(
            "Shows each labelled pair (people's tie rows dropped) to the judge in a seeded random order, "
            "asks both orders (disagreeing answers are a tie), and reports: agreement with people (1 for "
            "the human choice, 1/2 for a tie, failed comparisons left out) with its standard error; the "
            "tie (position-bias) rate; how often the raw answer is the first position; failures; and the "
            "same for the longer-is-better judge on the same pairs."
        ),
        epilog="example: preftune judge eval judge=longer data.eval=pandalm-testset-v1.json data.skip_invalid=true "
        "out=out/judge.json",
    )
    add_settings(evaluate, SETTINGS)
    evaluate.set_defaults(run=run_eval)


def _data_settings(overrides: list[str]) -> dict[str, Any]:
    """``columns`` and ``labels`` for the loader from ``data.columns.*`` / ``data.labels.*`` overrides."""
    if not overrides:
        return {}
    from preftune.cli.config import load_config

    data = load_config(None, list(overrides)).data
    return {"columns": data.columns or None, "labels": data.labels}


def _load(args: argparse.Namespace):  # -> tuple[list[PreferenceExample], DataSummary]
    from preftune.data.load import load_preference_data

    try:
        return load_preference_data(
            args.data, format=args.format, skip_invalid=args.skip_invalid, **_data_settings(args.overrides)
        )
    except PreftuneError as error:
        if args.skip_invalid or " row " not in str(error):
            raise
        raise PreftuneError(f"{error} (data.skip_invalid=true drops such rows and counts them)") from None


def run_eval(args: argparse.Namespace) -> int:
    from preftune.files import write_json_atomic
    from preftune.judging.agreement import judge_agreement

    if args.limit is not None and args.limit < 1:
        raise PreftuneError(f"limit must be at least 1, not {args.limit}")
    if args.batch_size is not None and args.batch_size < 1:
        raise PreftuneError(f"eval.batch_size must be at least 1, not {args.batch_size}")
    _check_outputs(args)
    examples, summary = _load(args)  # every row checked before any judge (or model) is made
    if args.limit is not None:
        examples = examples[: args.limit]
    store = None
    if args.store is not None:
        from preftune.judging.store import VerdictStore

        store = VerdictStore(args.store)  # not a store: refused here, before a judge loads or is asked
    try:
        judge = make_judge(args.judge)
        report = judge_agreement(
            judge,
            examples,
            store,
            seed=args.seed,
            name=args.judge,
            batch_size=args.batch_size,
            human_ties=summary.labels.get("tie") if summary.labels else None,
            progress=True,
        )
    finally:
        if store is not None:
            store.close()
    dropped = sum(summary.dropped.values())
    print(
        f"{summary.source}: {report.pairs} pairs judged ({summary.kept} kept of {summary.rows_read} rows; "
        f"human ties dropped: {report.human_ties if report.human_ties is not None else 'n/a'}; "
        f"all dropped: {dropped})"
    )
    print(report.table())
    if args.out is not None:
        payload = {
            **report.to_dict(),
            "judge_spec": args.judge,
            "identity": judge.identity(),
            "data": {
                "source": summary.source,
                "format": summary.format,
                "rows_read": summary.rows_read,
                "kept": summary.kept,
                "dropped": summary.dropped,
                "labels": summary.labels,
                "limit": args.limit,
            },
        }
        write_json_atomic(args.out, payload)
        print(f"wrote {args.out}", file=sys.stderr)
    _refuse_incomplete(report.judge.failed, report.pairs, args.store)
    return 0


def _check_outputs(args: argparse.Namespace) -> None:
    """``out`` and ``store`` writable and distinct, before the data is read or a judge made."""
    from preftune.cli.outputs import check_distinct, check_output_file

    if args.out is not None:
        check_output_file(args.out, "out")
    if args.store is not None:
        check_output_file(args.store, "store")
    check_distinct({"out": args.out, "store": args.store})


def _refuse_incomplete(failed: int, pairs: int, store: Path | None) -> None:
    """:class:`IncompleteRun` (exit 3) when comparisons failed: the report left them out."""
    if not failed:
        return
    from preftune.errors import IncompleteRun
    from preftune.judging.store import failed_comparisons

    raise IncompleteRun(failed_comparisons(failed, pairs, "the agreement", store))
