"""``preftune train`` and ``preftune evaluate``: offline preference training and its statistics."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from preftune.cli.config import dump_config, load_config, schema_defaults
from preftune.cli.keys import Setting, Settings, SettingsHelpFormatter, add_settings


def train_settings_help() -> str:
    """``preftune train --help``'s keys, in the form every command lists its own (cli/keys.py)."""
    from preftune.cli.keys import VOCABULARY, help_line, shown

    lines = ["settings (key=value, or in the CONFIG file; docs/cli.md):"]
    for key, (default, comment) in schema_defaults().items():
        meaning = comment or (VOCABULARY[key].help if key in VOCABULARY else "")
        lines.append(help_line(f"{key}={shown(default)}", meaning))
    return "\n".join(lines)


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
        epilog=train_settings_help(),
        formatter_class=SettingsHelpFormatter,
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


EVALUATE = Settings(
    "evaluate",
    (
        Setting("run", flag="--run", dest="run_dir"),
        Setting("model.name", flag="--model", dest="model"),
        Setting("model.reference", flag="--reference", dest="reference"),
        Setting(
            "data.eval", flag="--data", dest="data", help="preference pairs scored: a file, folder or bundled:NAME"
        ),
        Setting("data.max_length", flag="--max-length", help="tokens per pair (default: train's data.max_length)"),
        Setting("limit", flag="--limit"),
        Setting(
            "eval.batch_size",
            flag="--batch-size",
            help="pairs per forward pass, or answers per generate call (default 16)",
        ),
        Setting("data.skip_invalid", False, "--skip-invalid"),
        Setting("out", flag="--out", help="the metrics as JSON (--generate: a folder)"),
        Setting("prompts", flag="--prompts", help="--generate: the prompts answered (a file, folder or bundled:NAME)"),
        Setting("eval.judges", [], "--judge", dest="judge"),
        Setting("eval.baseline", "chosen", "--baseline", dest="baseline"),
        Setting("eval.max_new_tokens", flag="--max-new-tokens", help="longest greedy answer (default 128)"),
        Setting("eval.bootstrap", 2000, "--bootstrap"),
        Setting("eval.lc_bootstrap", 200, "--lc-bootstrap"),
    ),
    data_keys=("data.",),
)


def _register_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser(
        "evaluate",
        help="preference accuracy, margin, chosen drift of a model on held-out pairs; --generate: its win rate",
        description=(
            "Statistical evaluation (docs/methods.md §6) of a model against a reference on preference pairs: "
            "preference accuracy (ties half), likelihood accuracy, mean margin, chosen drift, chosen "
            "perplexity, each with its standard error. The data are read as 'preftune train' reads them "
            "(data.columns.chosen=..., data.labels.column=..., data.format=...). run=DIR scores a run's last "
            "model on that run's own held-out pairs. --generate instead answers the prompts greedily and "
            "reports the win rate against eval.baseline by eval.judges."
        ),
        epilog="example: preftune evaluate --generate model.name=out/run/model prompts=bundled:hh-harmless "
        "limit=24 eval.baseline=model:smollm2-135m-instruct eval.judges=[longer] out=out/run/winrate",
    )
    evaluate.add_argument("--generate", action="store_true", help="the win rate of the model's greedy answers")
    add_settings(evaluate, EVALUATE)
    evaluate.set_defaults(run=run_evaluate)


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
    generative = (
        "prompts",
        "eval.judges",
        "eval.baseline",
        "eval.max_new_tokens",
        "eval.bootstrap",
        "eval.lc_bootstrap",
    )
    given = [key for key in generative if key in args.given]
    if given:
        raise PreftuneError(f"{given[0]} belongs to generative evaluation: add --generate")
    if args.run_dir is not None:
        own = ("model.name", "model.reference", "data.eval", "data.max_length", "limit", "data.skip_invalid")
        given = [key for key in own if key in args.given]
        if given or args.overrides:
            shown = ", ".join(given) or "data settings"
            raise PreftuneError(f"run= takes the model, reference and data from the run: drop {shown}")
        quiet_libraries()
        from preftune.evaluation.command import evaluate_run

        evaluate_run(args.run_dir, out=args.out, batch_size=args.batch_size)
        return 0
    if args.model is None or args.data is None:
        raise PreftuneError("evaluate needs model.name= and data.eval=, or run=DIR (a preftune train output folder)")
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

    statistical = ("run", "data.eval", "model.reference", "data.max_length", "data.skip_invalid")
    given = [key for key in statistical if key in args.given] + (["data settings"] if args.overrides else [])
    if given:
        raise PreftuneError(f"--generate reads model.name, prompts, eval.baseline and eval.judges: drop {given[0]}")
    if args.model is None or args.prompts is None:
        raise PreftuneError("--generate needs model.name= and prompts=")
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
