"""``preftune train-rm``: a Bradley–Terry reward model from preference pairs (P4's scorer, a judge ``rm:PATH``)."""

from __future__ import annotations

import argparse
import dataclasses

from rich.console import Console

from preftune.cli.config import load_config
from preftune.cli.keys import Setting, Settings, add_settings
from preftune.errors import PreftuneError

SETTINGS = Settings(
    "train-rm",
    (
        Setting(
            "model.name",
            "smollm2-135m-instruct",
            "--model",
            dest="model",
            help="the base model: built-in name, folder or hub name",
        ),
        Setting("data.train", flag="--data", dest="data"),
        Setting(
            "data.eval",
            flag="--eval-data",
            help="held-out pairs from their own file (default: hold out data.eval_size)",
        ),
        Setting("output_dir", flag="--out", required=True, dest="out"),
        Setting("lora.enabled", True, dest="lora", help="a LoRA adapter, merged on save (false: full fine-tuning)"),
        Setting("lora.rank", 16, "--lora-rank"),
        Setting("lora.last_layers", flag="--lora-last-layers"),
        Setting("optim.epochs", 1, "--epochs"),
        Setting("optim.lr", 1e-4, "--lr"),
        Setting("optim.batch_size", 8, "--batch-size"),
        Setting("data.max_length", flag="--max-length", help="prompt + response tokens (default: train's, 1024)"),
        Setting(
            "data.eval_size",
            flag="--eval-pairs",
            help="pairs held out, whole prompts at a time (default: a tenth, at most 100)",
        ),
        Setting("data.train_size", flag="--train-pairs"),
        Setting("optim.seed", 0, "--seed", help="head initialisation and pair order"),
        Setting("optim.mixed_precision", "auto", "--precision", dest="precision"),
        Setting("model.chat_template", flag="--chat-template"),
    ),
    switches={"--lora": ("lora.enabled", True), "--full": ("lora.enabled", False)},
    data_keys=("data.",),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train-rm",
        help="train a Bradley-Terry reward model on preference pairs (for rank method=score, judge=rm:PATH)",
        description=(
            "Trains a sequence-classification reward model (one number per prompt + response, rendered with the "
            "chat template) with the loss -log sigmoid(r_chosen - r_rejected), on any pairs 'preftune train' "
            "reads. Pairs are held out as training holds them out; the held-out accuracy (ties half) +- its "
            "standard error is printed before and after. The data are read as 'preftune train' reads them "
            "(data.columns.chosen=..., data.format=...). The output folder loads with "
            "AutoModelForSequenceClassification.from_pretrained and holds metrics.json."
        ),
        epilog="example: preftune train-rm data.train=bundled:hh-harmless output_dir=out/rm",
    )
    add_settings(parser, SETTINGS)
    parser.set_defaults(run=run_train_rm)


def reward_config(args: argparse.Namespace):
    """The run's :class:`~preftune.reward.RewardConfig`: ``data.*`` overrides, then the flags."""
    from preftune.reward import RewardConfig

    data = load_config(None, list(args.overrides)).data
    flags = {
        "train": args.data,
        "eval": args.eval_data,
        "max_length": args.max_length,
        "eval_size": args.eval_pairs,
        "train_size": args.train_pairs,
    }
    data = dataclasses.replace(data, **{k: v for k, v in flags.items() if v is not None})
    if not float(args.epochs).is_integer():
        raise PreftuneError(f"train-rm: optim.epochs must be a whole number of passes, not {args.epochs}")
    return RewardConfig(
        model=args.model,
        output_dir=str(args.out),  # RewardConfig holds a str (saved in metrics.json); the key reads a Path
        data=data,
        lora=args.lora,
        lora_rank=args.lora_rank,
        lora_last_layers=args.lora_last_layers,
        epochs=int(args.epochs),
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        chat_template=args.chat_template,
        precision=args.precision,
    )


def run_train_rm(args: argparse.Namespace) -> int:
    from preftune.cli.train import quiet_libraries
    from preftune.progress import StepProgress
    from preftune.reward import prepare, train_reward_model

    config = reward_config(args)
    quiet_libraries()
    console = Console(stderr=True, soft_wrap=True)
    prepared = prepare(config)  # settings, data, split and tokens: every check before the model loads
    split = str(prepared.split) if prepared.split is not None else f"held-out pairs from {config.data.eval}"
    console.print(f"{len(prepared.train)} training pairs; {split}", highlight=False)
    result = train_reward_model(prepared, lambda steps: StepProgress(steps, description="training", console=console))
    console.print(
        f"held-out accuracy {result.before.accuracy:.3f} ± {result.before.stderr:.3f} -> "
        f"{result.after.accuracy:.3f} ± {result.after.stderr:.3f} (n={result.after.pairs}); mean margin "
        f"{result.before.margin:+.3f} -> {result.after.margin:+.3f}; BT loss by epoch "
        + ", ".join(f"{loss:.4f}" for loss in result.epoch_losses),
        highlight=False,
    )
    console.print(f"saved to {result.output_dir} ({result.seconds:.0f} s)", highlight=False)
    return 0
