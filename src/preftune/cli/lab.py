"""``preftune lab``: P3's didactic studies (Tajwar et al. 2024, docs/methods.md §7) as tables, PNG and JSON.

- ``preftune lab bandit``: the 100-action bandit, every method offline and on-policy, scored by the
  exact true reward against gradient steps and samples drawn.
- ``preftune lab sequence-bandit``: its sequence variant, a tiny causal transformer emitting L tokens with a
  per-token reward, offline vs on-policy, scored by the exact (enumerated) true reward.
- ``preftune lab kl-toy``: gradient steps on forward vs reverse KL over four categories.
- ``preftune lab length``: the synthetic length tasks (min, mode, skew length) on a small language
  model, offline vs on-policy methods.

Every option is checked (and the study's config built) before anything runs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preftune.cli.keys import Setting, Settings, add_settings
from preftune.cli.outputs import check_output_folder
from preftune.errors import PreftuneError

if TYPE_CHECKING:
    from preftune.lab.bandit import BanditResult
    from preftune.lab.kl_toy import KLToyResult
    from preftune.lab.length import LengthResult
    from preftune.lab.sequence_bandit import SequenceBanditResult

DEFAULT_OUT = Path("out/lab")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "lab",
        help="P3's didactic studies: the bandit (and its sequence variant), the KL toy and the length tasks",
        description="Didactic studies of P3 (Tajwar et al. 2024) run with preftune's own objectives.",
    )
    studies = parser.add_subparsers(dest="study", metavar="STUDY", required=True)
    _register_bandit(studies)
    _register_sequence_bandit(studies)
    _register_kl_toy(studies)
    _register_length(studies)


def _register_bandit(studies: argparse._SubParsersAction) -> None:
    bandit = studies.add_parser(
        "bandit",
        help="offline vs on-policy, with vs without a negative gradient, on P3's 100-action bandit",
        description=(
            "Trains a policy that starts at the reference (tanh-Cauchy histogram, peak near action 20) with each "
            "objective, offline (a fixed dataset drawn once from the reference) and on-policy (fresh samples each "
            "step), and tracks the exact true reward against gradient steps and samples drawn, over seeds. "
            "Prints a table and writes PNGs and JSON to out."
        ),
        epilog="example: preftune lab bandit peak=far methods=[dpo,bon] seeds=5 out=out/lab",
    )
    peak = "reward peak far from the reference's (a = 70) or near it (a = 20)"
    add_settings(bandit, _bandit_settings("lab bandit", peak, seeds=5, steps=300))
    bandit.set_defaults(run=run_bandit_command)


def _register_sequence_bandit(studies: argparse._SubParsersAction) -> None:
    parser = studies.add_parser(
        "sequence-bandit",
        help="P3's bandit as sequences: a tiny transformer emits L tokens with a per-token reward",
        description=(
            "A tiny causal transformer that starts exactly at the reference (i.i.d. tokens from the tanh-Cauchy "
            "histogram in V bins) emits L tokens per prompt token; the reward is the mean over tokens of a bump "
            "around token 7 (far) or the reference's mode (near). Each objective trains it offline (a fixed dataset "
            "drawn once from the reference) and on-policy (fresh samples each step), scored by the exact true reward "
            "(all V^L responses enumerated) over seeds. Prints a table and writes PNGs and JSON to out."
        ),
        epilog="example: preftune lab sequence-bandit peak=far methods=[dpo,bon] seeds=3 out=out/lab",
    )
    extra = (
        Setting("length", 3, "--length"),
        Setting("eval.every", 10, "--eval-every", help="steps between exact evaluations"),
    )
    peak = "reward bump far from the reference's mode (token 7) or at it"
    add_settings(parser, _bandit_settings("lab sequence-bandit", peak, seeds=3, steps=200, extra=extra))
    parser.set_defaults(run=run_sequence_bandit_command)


def _bandit_settings(command: str, peak_help: str, seeds: int, steps: int, extra: tuple[Setting, ...] = ()) -> Settings:
    """The settings both bandits take: peak, methods, regimes, seeds, steps, samples, lr, threshold, out."""
    from preftune.lab.bandit import METHODS, REGIMES

    return Settings(
        command,
        (
            Setting("peak", "far", "--peak", help=peak_help),
            Setting("methods", list(METHODS), "--methods", flag_nargs="+"),
            Setting("regimes", list(REGIMES), "--regimes", flag_nargs="+"),
            Setting("seeds", seeds, "--seeds"),
            Setting("optim.max_steps", steps, "--steps", help="gradient steps per run"),
            Setting("sampling.n", 4, "--samples", help="C, samples per context per step"),
            Setting("optim.lr", 1e-3, "--lr", help="Adam's learning rate"),
            Setting("threshold", 0.5, "--threshold"),
            *extra,
            Setting("out", DEFAULT_OUT, "--out", help="output folder"),
        ),
    )


def _write(out: Path, stem: str, payload: dict[str, Any], figures: dict[str, Any]) -> None:
    """``out/stem.json`` and ``out/stem_NAME.png`` per figure (``""``: ``out/stem.png``), atomically; says where."""
    from preftune.files import write_json_atomic
    from preftune.lab.plots import save_png

    files = [write_json_atomic(out / f"{stem}.json", payload)]
    files += [save_png(figure, out / f"{stem}{'_' + name if name else ''}.png") for name, figure in figures.items()]
    print(f"wrote {', '.join(str(path) for path in files)}")


def _register_kl_toy(studies: argparse._SubParsersAction) -> None:
    toy = studies.add_parser(
        "kl-toy",
        help="gradient steps on forward KL(q‖p) vs reverse KL(p‖q) over four categories",
        description=(
            "From p0 = [0.3, 0.3, 0.1, 0.3] (softmax logits log p0) towards q = [0.2, 0.1, 0.6, 0.1]: plain gradient "
            "descent on each KL, each category's mass after every step. Prints milestones and writes a PNG and "
            "JSON to out."
        ),
        epilog="example: preftune lab kl-toy optim.max_steps=100 optim.lr=0.5 out=out/lab",
    )
    settings = (
        Setting("optim.max_steps", 100, "--steps"),
        Setting("optim.lr", 0.5, "--lr", help="step size on the logits"),
        Setting("out", DEFAULT_OUT, "--out", help="output folder"),
    )
    add_settings(toy, Settings("lab kl-toy", settings))
    toy.set_defaults(run=run_kl_toy_command)


LENGTH_TASKS = ("min", "mode", "skew")  # as preftune.lab.length.TASKS, which is imported only to run
LENGTH_METHODS = ("offline_dpo", "onpolicy_dpo", "rwr", "reinforce", "pref_ft")


def _register_length(studies: argparse._SubParsersAction) -> None:
    length = studies.add_parser(
        "length",
        help="synthetic length tasks on a small language model: offline vs on-policy methods",
        description=(
            "Warms the tiny model up to recite the alphabet with lengths spread around a mode, samples an offline "
            "dataset from it paired by the task (min: shorter preferred; mode: closer to the dataset's mode length; "
            "skew: shorter, the dataset truncated to its longer half), then trains each method from it with LoRA "
            "(offline_dpo and pref_ft on the pairs, onpolicy_dpo, rwr and reinforce on their own samples, rewarded "
            "-length or -|length - mode|) and measures the mean length (or distance to the mode) on held-out prompts "
            "at a few steps. Prints a table and writes a PNG and JSON to out."
        ),
        epilog="example: preftune lab length task=skew methods=[onpolicy_dpo,offline_dpo] optim.max_steps=20 "
        "out=out/lab",
    )
    settings = (
        Setting("task", "min", "--task"),
        Setting("methods", list(LENGTH_METHODS), "--methods", flag_nargs="+"),
        Setting("optim.max_steps", 20, "--steps", help="optimiser steps per method"),
        Setting(
            "optim.seed",
            0,
            "--seed",
            help="seed of the data, the LoRA and the sampling; every seed starts from the same warm model",
        ),
        Setting("out", DEFAULT_OUT, "--out", help="output folder"),
    )
    add_settings(length, Settings("lab length", settings))
    length.set_defaults(run=run_length_command)


def _names(key: str, values: list[str]) -> list[str]:
    """``["dpo,bon", "ipo"]`` -> ``["dpo", "bon", "ipo"]``; an empty item is refused, naming ``key``."""
    names = [name.strip() for value in values for name in value.split(",")]
    if any(not name for name in names):
        raise PreftuneError(
            f"{key}={', '.join(values)} has an empty item; give a list such as {key}=[a, b] (or {key}=a,b)"
        )
    return names


def _check_out(out: Path) -> None:
    check_output_folder(out, "out")


def run_bandit_command(args: argparse.Namespace) -> int:
    from preftune.lab.bandit import BanditConfig, run_bandit

    config = BanditConfig(
        peak=args.peak,
        methods=tuple(_names("methods", args.methods)),
        regimes=tuple(_names("regimes", args.regimes)),
        seeds=args.seeds,
        steps=args.steps,
        samples_per_context=args.samples,
        lr=args.lr,
        threshold=args.threshold,
    )
    _check_out(args.out)
    result = run_bandit(config)

    from preftune.lab.plots import bandit_histogram_figure, bandit_reward_figure

    print(bandit_table(result))
    figures = {"reward": bandit_reward_figure(result), "histograms": bandit_histogram_figure(result)}
    _write(args.out, f"bandit_{config.peak}", result.to_json(), figures)
    return 0


def run_sequence_bandit_command(args: argparse.Namespace) -> int:
    from preftune.lab.sequence_bandit import SequenceBanditConfig, run_sequence_bandit

    config = SequenceBanditConfig(
        peak=args.peak,
        methods=tuple(_names("methods", args.methods)),
        regimes=tuple(_names("regimes", args.regimes)),
        seeds=args.seeds,
        steps=args.steps,
        samples_per_context=args.samples,
        length=args.length,
        lr=args.lr,
        eval_every=args.eval_every,
        threshold=args.threshold,
    )
    _check_out(args.out)
    result = run_sequence_bandit(config)

    from preftune.lab.plots import sequence_bandit_figures

    print(bandit_table(result, f"P3 sequence bandit (V = {config.vocab}, L = {config.length})"))
    rewards, marginals = sequence_bandit_figures(result)
    _write(args.out, f"sequence_bandit_{config.peak}", result.to_json(), {"reward": rewards, "tokens": marginals})
    return 0


def bandit_table(result: BanditResult | SequenceBanditResult, name: str = "P3 bandit") -> str:
    """The summary as a console table: final reward ± 95% CI over seeds, steps/samples to the threshold."""
    config = result.config
    lines = [
        f"{name}, {config.peak} peak: {config.seeds} seed(s), {config.steps} steps, "
        f"C = {config.samples_per_context}, "
        f"lr {config.lr:g}; reward under π_ref {result.initial_reward:.4f}; {result.seconds:.1f} s",
        f"{'method':<10} {'regime':<10} {'final reward ± 95% CI':>22} {'reached':>8} "
        f"{'steps to ' + format(config.threshold, 'g'):>13} {'samples to ' + format(config.threshold, 'g'):>15}",
    ]
    for row in result.summary():
        ci = "n/a" if math.isnan(row.ci) else f"{row.ci:.4f}"
        steps = "-" if row.steps_to_threshold is None else f"{row.steps_to_threshold:g}"
        samples = "-" if row.samples_to_threshold is None else f"{row.samples_to_threshold:g}"
        lines.append(
            f"{row.method:<10} {row.regime:<10} {row.final:>12.4f} ± {ci:<7} "
            f"{row.reached:>4}/{row.seeds:<3} {steps:>13} {samples:>15}"
        )
    return "\n".join(lines)


def run_kl_toy_command(args: argparse.Namespace) -> int:
    from preftune.lab.kl_toy import KLToyConfig, run_kl_toy

    config = KLToyConfig(steps=args.steps, lr=args.lr)
    _check_out(args.out)
    result = run_kl_toy(config)

    from preftune.lab.plots import kl_toy_figure

    print(kl_toy_table(result))
    _write(args.out, "kl_toy", result.to_json(), {"": kl_toy_figure(result)})
    return 0


def kl_toy_table(result: KLToyResult) -> str:
    """Each category's mass at a few steps, for both KLs."""
    steps = sorted({0, 1, 5, 10, 25, 50, result.config.steps} & set(range(result.config.steps + 1)))
    width = len(result.config.q)
    header = "  ".join(f"p[{i}]" + " " * 2 for i in range(width))
    lines = [
        f"P3 KL toy: p0 = {list(result.config.p0)}, q = {list(result.config.q)}, lr {result.config.lr:g}",
        f"{'KL':<8} {'step':>5}  {header}",
    ]
    for name, masses in (("forward", result.forward), ("reverse", result.reverse)):
        for step in steps:
            lines.append(f"{name:<8} {step:>5}  " + "  ".join(f"{float(p):.4f}" for p in masses[step]))
    return "\n".join(lines)


def run_length_command(args: argparse.Namespace) -> int:
    from preftune.lab.length import LengthConfig, run_length_study

    config = LengthConfig(
        task=args.task, methods=tuple(_names("methods", args.methods)), steps=args.steps, seed=args.seed
    )
    _check_out(args.out)
    result = run_length_study(config)

    from preftune.lab.plots import length_figure

    print(length_table(result))
    _write(args.out, f"length_{config.task}", result.to_dict(), {"": length_figure(result)})
    return 0


def length_table(result: LengthResult) -> str:
    """Per method: the task's measure at each checkpoint, and the training time."""
    config, data = result.config, result.dataset.summary()
    steps = result.curves[0].steps if result.curves else []
    kept = "" if data["floor"] is None else f", kept >= {data['floor']}"
    lines = [
        f"P3 {config.task} length: {config.steps} steps, M = {config.batch_size}, C = {config.samples_per_prompt}, "
        f"lr {config.lr:g}; dataset {data['samples']} samples (mean length {data['mean_length']:.1f}, "
        f"mode {data['mode']}{kept}), {data['pairs']} pairs; "
        f"warm-up {result.warmup_seconds:.1f} s, total {result.seconds:.1f} s",
        f"mean {result.target} (tokens) on held-out prompts at steps {' '.join(map(str, steps))}",
        f"{'method':<13} " + " ".join(f"{s:>6}" for s in steps) + f" {'finished':>9} {'seconds':>8}",
    ]
    for curve in result.curves:
        values = " ".join(f"{v:>6.2f}" for v in curve.values(config.task))
        lines.append(f"{curve.method:<13} {values} {curve.measures[-1].finished:>9.2f} {curve.seconds:>8.1f}")
    return "\n".join(lines)
