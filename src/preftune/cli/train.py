"""``preftune train`` and ``preftune evaluate``: offline preference training and its statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preftune.cli.config import dump_config, load_config, schema_keys

KEYS_HELP = "config keys: " + ", ".join(schema_keys())


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``preftune train`` and ``preftune evaluate`` (with its ``--generate`` options) to ``commands``."""
    _register_train(commands)
    _register_evaluate(commands)


def _register_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train a model with any objective: on preference pairs (offline) or its own samples (online.rounds)",
        description=(
            "Train a Hugging Face causal LM on preference pairs. CONFIG is a YAML file (see examples/); "
            "key=value arguments override it, e.g. 'optim.lr=1e-4 objective=\"dpo + 0.5*exmate\"'. "
            "The output folder gets checkpoints, the final model (loadable with from_pretrained), "
            "TensorBoard logs, curves.png and summary.md."
        ),
        epilog=KEYS_HELP,
    )
    train.add_argument("config", nargs="?", type=Path, help="YAML config file (optional: defaults otherwise)")
    train.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    train.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    train.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    train.add_argument(
        "--trl",
        type=Path,
        metavar="FILE",
        default=None,
        help="a TRL config (DPOConfig's names, TRL's defaults; docs/from-trl.md) instead of CONFIG",
    )
    train.set_defaults(run=run_train)


def _register_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="preference accuracy, margin, chosen drift of a model on held-out pairs",
        description=(
            "Statistical evaluation (docs/methods.md §6) of a model against a reference on preference pairs: "
            "preference accuracy (ties half), likelihood accuracy, mean margin, chosen drift, chosen "
            "perplexity, each with its standard error. The data are read as 'preftune train' reads them: "
            "data.* settings (data.columns.chosen=..., data.labels.column=..., data.format=...) follow as "
            "key=value. --run DIR scores a run's last model on that run's own held-out pairs. --generate "
            "instead answers --prompts greedily and reports the win rate against --baseline by --judge."
        ),
        epilog="example: preftune evaluate --generate --model out/run/model --prompts bundled:hh-harmless "
        "--limit 24 --baseline model:smollm2-135m-instruct --judge longer --out out/run/winrate",
    )
    evaluate.add_argument("overrides", nargs="*", metavar="data.key=value", help="data settings, as for train")
    evaluate.add_argument(
        "--run", dest="run_dir", type=Path, default=None, help="a preftune train output folder: its model and split"
    )
    evaluate.add_argument("--model", default=None, help="model folder, adapter folder, or embedded name")
    evaluate.add_argument("--reference", default=None, help="reference model (default: the adapter's base, or itself)")
    evaluate.add_argument("--data", default=None, help="preference data file, folder or bundled:NAME")
    evaluate.add_argument("--max-length", type=int, default=None, help="tokens per pair (default: data.max_length)")
    evaluate.add_argument("--limit", type=int, default=None, help="evaluate only the first N pairs")
    evaluate.add_argument("--batch-size", type=int, default=None, help="pairs per forward pass (default 16)")
    evaluate.add_argument("--skip-invalid", action="store_true", help="drop invalid rows instead of stopping")
    evaluate.add_argument(
        "--out", type=Path, default=None, help="write the metrics as JSON here (--generate: a folder)"
    )
    _add_generative_options(evaluate)
    evaluate.set_defaults(run=run_evaluate)


def _add_generative_options(evaluate: argparse.ArgumentParser) -> None:
    """The ``--generate`` options, in a group of their own in ``--help``."""
    generate = evaluate.add_argument_group("generative evaluation (--generate)")
    generate.add_argument("--generate", action="store_true", help="win rate of the model's greedy answers")
    generate.add_argument("--prompts", default=None, help="prompts: a file, folder or bundled:NAME (as generate reads)")
    generate.add_argument(
        "--judge", action="append", default=[], help="pairwise judge (repeatable): longer, local:M, ..."
    )
    generate.add_argument(
        "--baseline", default="chosen", help="chosen | model:NAME_OR_PATH | file:PATH (default: chosen)"
    )
    generate.add_argument("--max-new-tokens", type=int, default=None, help="longest answer (default: 128)")
    generate.add_argument("--bootstrap", type=int, default=2000, help="win-rate bootstrap resamples (default: 2000)")
    generate.add_argument(
        "--lc-bootstrap",
        type=int,
        default=200,
        help="length-controlled bootstrap resamples, each a refit (default: 200)",
    )


def quiet_libraries() -> None:
    """Our own progress and summaries say what happens; the libraries' per-file bars are noise."""
    import warnings

    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


def run_train(args: argparse.Namespace) -> int:
    config_path = args.config
    overrides = list(args.overrides)
    # `preftune train optim.lr=1e-4` (no file): the first positional is an override.
    if config_path is not None and "=" in str(config_path) and not config_path.exists():
        overrides.insert(0, str(config_path))
        config_path = None
    if args.trl is not None and config_path is not None:
        from preftune.errors import PreftuneError

        raise PreftuneError(f"give a preftune CONFIG ({config_path}) or --trl {args.trl}, not both")
    notes: list[str] = []
    config = load_config(args.trl or config_path, overrides, trl=args.trl is not None, notes=notes)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if args.resume:
        config.resume = True
    if args.print_config:
        sys.stdout.write(dump_config(config))
        return 0
    from preftune.run.checks import check

    check(config)  # a bad setting is refused before the trainer's heavy imports (peft, transformers' trainer)
    quiet_libraries()
    from preftune.run.train import run_training

    run_training(config)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from preftune.errors import PreftuneError

    if args.generate:
        return run_generative_evaluate(args)
    given = [
        flag
        for flag, on in (
            ("--prompts", args.prompts),
            ("--judge", args.judge),
            ("--max-new-tokens", args.max_new_tokens is not None),
        )
        if on
    ]
    if given:
        raise PreftuneError(f"{given[0]} belongs to generative evaluation: add --generate")
    if args.run_dir is not None:
        given = [name for name in ("model", "reference", "data", "max_length", "limit") if getattr(args, name)]
        if given or args.overrides:
            shown = ", ".join(f"--{n.replace('_', '-')}" for n in given) or "data settings"
            raise PreftuneError(f"--run takes the model, reference and data from the run: drop {shown}")
        quiet_libraries()
        from preftune.evaluation.command import evaluate_run

        evaluate_run(args.run_dir, out=args.out, batch_size=args.batch_size)
        return 0
    if args.model is None or args.data is None:
        raise PreftuneError("evaluate needs --model and --data, or --run DIR (a preftune train output folder)")
    bad = [item for item in args.overrides if not item.startswith("data.")]
    if bad:
        raise PreftuneError(f"evaluate takes only data.* settings, not '{bad[0]}'")
    data_config = load_config(None, list(args.overrides)).data
    quiet_libraries()
    from preftune.evaluation.command import evaluate_model

    evaluate_model(
        model=args.model,
        reference=args.reference,
        data=args.data,
        data_config=data_config,
        max_length=args.max_length,
        limit=args.limit,
        skip_invalid=True if args.skip_invalid else None,
        out=args.out,
        batch_size=args.batch_size or 16,
    )
    return 0


def run_generative_evaluate(args: argparse.Namespace) -> int:
    from preftune.errors import PreftuneError

    flags = (
        ("--run", args.run_dir),
        ("--data", args.data),
        ("--reference", args.reference),
        ("--max-length", args.max_length),
        ("data settings", args.overrides),
    )
    given = [flag for flag, on in flags if on]
    if given:
        raise PreftuneError(f"--generate reads --model, --prompts, --baseline and --judge: drop {given[0]}")
    if args.model is None or args.prompts is None:
        raise PreftuneError("--generate needs --model and --prompts")
    from preftune.evaluation.generate_eval import evaluate_generation

    quiet_libraries()
    evaluate_generation(
        args.model,
        args.prompts,
        args.judge,
        args.baseline,
        limit=args.limit,
        max_new_tokens=128 if args.max_new_tokens is None else args.max_new_tokens,
        batch_size=16 if args.batch_size is None else args.batch_size,
        out=args.out,
        bootstrap=args.bootstrap,
        lc_bootstrap=args.lc_bootstrap,
    )
    return 0
