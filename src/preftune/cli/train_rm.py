"""``preftune train-rm``: a Bradley–Terry reward model from preference pairs (P4's scorer, a judge ``rm:PATH``)."""

from __future__ import annotations

import argparse
import dataclasses

from rich.console import Console

from preftune.cli.config import load_config
from preftune.errors import PreftuneError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train-rm",
        help="train a Bradley-Terry reward model on preference pairs (for rank --method score, --judge rm:PATH)",
        description=(
            "Trains a sequence-classification reward model (one number per prompt + response, rendered with the "
            "chat template) with the loss -log sigmoid(r_chosen - r_rejected), on any pairs 'preftune train' "
            "reads. Pairs are held out as training holds them out; the held-out accuracy (ties half) +- its "
            "standard error is printed before and after. data.* settings follow as key=value "
            "(data.columns.chosen=..., data.format=...). The output folder loads with "
            "AutoModelForSequenceClassification.from_pretrained and holds metrics.json."
        ),
        epilog="example: preftune train-rm --model smollm2-135m-instruct --data bundled:hh-harmless --out out/rm",
    )
    parser.add_argument("overrides", nargs="*", metavar="data.key=value", help="data settings, as for train")
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="base model: built-in name, folder or hub name"
    )
    parser.add_argument("--data", help="preference pairs: file, folder or bundled:NAME (default: data.train)")
    parser.add_argument("--eval-data", help="held-out pairs from a separate file (default: hold out --eval-pairs)")
    parser.add_argument("--out", required=True, help="output folder (must not exist, or be empty)")
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--lora", dest="lora", action="store_true", default=True, help="LoRA, merged on save (default)")
    kind.add_argument("--full", dest="lora", action="store_false", help="full fine-tuning")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank (default 16)")
    parser.add_argument("--lora-last-layers", type=int, help="adapt only the last N decoder layers (cheaper)")
    parser.add_argument("--epochs", type=int, default=1, help="passes over the training pairs (default 1)")
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step (default 8)")
    parser.add_argument("--max-length", type=int, help="prompt + response tokens (default: data.max_length, 512)")
    parser.add_argument("--eval-pairs", type=int, help="pairs held out, whole prompts at a time (default 100)")
    parser.add_argument("--train-pairs", type=int, help="use only the first N training pairs")
    parser.add_argument("--seed", type=int, default=0, help="head initialisation and pair order (default 0)")
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "bf16", "no"),
        help="training autocast: auto = bf16 where the CPU/GPU multiplies bf16 natively",
    )
    parser.add_argument("--chat-template", help="for a tokenizer without one: chatml, zephyr or a .jinja file")
    parser.set_defaults(run=run_train_rm)


def reward_config(args: argparse.Namespace):
    """The run's :class:`~preftune.reward.RewardConfig`: ``data.*`` overrides, then the flags."""
    from preftune.reward import RewardConfig

    bad = [item for item in args.overrides if not item.startswith("data.")]
    if bad:
        raise PreftuneError(f"train-rm takes only data.* settings as key=value, not '{bad[0]}'")
    data = load_config(None, list(args.overrides)).data
    flags = {
        "train": args.data,
        "eval": args.eval_data,
        "max_length": args.max_length,
        "eval_size": args.eval_pairs,
        "train_size": args.train_pairs,
    }
    data = dataclasses.replace(data, **{k: v for k, v in flags.items() if v is not None})
    return RewardConfig(
        model=args.model,
        output_dir=args.out,
        data=data,
        lora=args.lora,
        lora_rank=args.lora_rank,
        lora_last_layers=args.lora_last_layers,
        epochs=args.epochs,
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
