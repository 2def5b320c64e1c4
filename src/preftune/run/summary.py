"""A run's ending for a person: the held-out verdicts and samples on the console, ``summary.md``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console

from preftune.data import DataSummary
from preftune.evaluation.names import MEANINGS, SUMMARY_METRICS
from preftune.files import write_atomic
from preftune.run.config import RunConfig, StageConfig
from preftune.run.report import format_eval_table


def print_outcome(console: Console, outcome: dict[str, Any], output_dir: Path) -> None:
    """The end of a run on the console: held-out before -> after, samples, where the files are."""
    console.print(f"\nheld-out pairs, before -> after training ({outcome['seconds']:.0f} s in all; ties count half):")
    for line in outcome["verdicts"]:
        console.print(f"  {line}", soft_wrap=True)
    for sample in outcome.get("samples", []):
        prompt = sample["prompt"].split("<|im_start|>user")[-1].split("<|im_end|>")[0].strip()
        console.print(f"\n[bold]prompt[/bold]: {prompt[-300:]}", soft_wrap=True, markup=True)
        console.print(f"  [bold]before[/bold]: {sample['before']}", soft_wrap=True, markup=True)
        console.print(f"  [bold]after[/bold]:  {sample['after']}", soft_wrap=True, markup=True)
    curves = ", ".join(str(path) for path in sorted(output_dir.rglob("curves.png")))
    console.print(f"\nsummary: {output_dir / 'summary.md'}" + (f"; curves: {curves}" if curves else ""))


def flat_config(config: RunConfig, stage: StageConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {"stage": stage.name, "objective": stage.objective, "reference": stage.reference}
    for section in ("model", "lora", "data", "optim"):
        for key, value in vars(getattr(config, section)).items():
            if isinstance(value, bool | int | float | str):
                flat[f"{section}.{key}"] = value
    return flat


def write_summary(
    output_dir: Path, config: RunConfig, outcome: dict[str, Any], data: dict[str, DataSummary | None]
) -> None:
    lines = [f"# preftune run: {output_dir}", "", f"model: `{config.model.name}`; LoRA: {config.lora.enabled}", ""]
    lines += ["## Data", ""] + [f"- {split}: {summary}" for split, summary in data.items() if summary] + [""]
    for record in outcome["stages"]:
        lines += [f"## Stage `{record['stage']}`: `{record['objective']}`", ""]
        lines += [f"{record['steps']} steps in {record['seconds']:.0f} s; model: `{record['model']}`", ""]
        lines += [format_eval_table(record.get("eval_before"), record.get("eval_after")), ""]
        if record.get("rounds"):
            lines += [rounds_table(record["rounds"]), ""]
        for shown in record.get("round_samples", []):
            lines += [
                f"Round {shown['round']}, prompt: `{shown['prompt'][-300:]}`",
                "",
                f"- best ({shown['best_reward']:+.3f}): {shown['best']}",
                f"- worst ({shown['worst_reward']:+.3f}): {shown['worst']}",
                "",
            ]
        if record.get("gradient_cosines"):
            lines += [gradient_cosine_table(record["gradient_cosines"]), ""]
        if record.get("win_rates"):
            lines += [win_rate_table(record["win_rates"], config.eval.baseline), ""]
        if "curves" in record:
            lines += [f"![curves]({Path(record['curves']).relative_to(output_dir)})", ""]
    lines += _meanings(outcome)
    if outcome.get("verdicts"):
        lines += ["## Held-out gain (first stage's start -> last stage's end)", ""]
        lines += [f"- {line}" for line in outcome["verdicts"]] + [""]
    if outcome.get("samples"):
        lines += ["## Held-out prompts, greedy responses before and after", ""]
        for sample in outcome["samples"]:
            lines += ["**Prompt**", "", "```", sample["prompt"][-1200:], "```", ""]
            lines += [
                "**Before**",
                "",
                "```",
                sample["before"],
                "```",
                "",
                "**After**",
                "",
                "```",
                sample["after"],
                "```",
                "",
            ]
    write_atomic(output_dir / "summary.md", "\n".join(lines))


def _meanings(outcome: dict[str, Any]) -> list[str]:
    """One line per held-out metric the stages report: what the numbers mean."""
    shown = {name for record in outcome["stages"] for name in (record.get("eval_after") or {})}
    lines = [f"- `{name}`: {MEANINGS[name]}" for name in SUMMARY_METRICS if name in shown]
    if not lines:
        return []
    return ["## What the held-out numbers mean", "", *lines, "- ± is one standard error over the pairs", ""]


def win_rate_table(records: list[dict[str, Any]], baseline: str) -> str:
    """The stage's win rates (:mod:`preftune.training.win_rates`) as a Markdown table."""
    lines = [
        f"Win rates of greedy answers to held-out prompts against {baseline} (ties half; 95% bootstrap):",
        "",
        "| step | judge | win rate | LC win rate | wins / ties / losses | mean length (baseline) |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        lc = f"{r['lc_win_rate']:.3f}" if r.get("lc_reason") is None else f"cannot be estimated: {r['lc_reason']}"
        lines.append(
            f"| {r['step']} | {r['judge']} | {r['win_rate']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | "
            f"{lc} | {r['wins']} / {r['ties']} / {r['losses']} | "
            f"{r['mean_length']:.0f} ({r['baseline_mean_length']:.0f}) |"
        )
    return "\n".join(lines)


def rounds_table(rounds: list[dict[str, float]]) -> str:
    """An on-policy stage's rounds (:class:`~preftune.training.online.RoundStats`) as a Markdown table,
    with a column for each of the labeller's diagnostics (e.g. a judge's ``judge_decided``)."""
    from dataclasses import fields

    from preftune.training.online import RoundStats

    standard = {f.name for f in fields(RoundStats)}
    extra = list(dict.fromkeys(k for r in rounds for k in r if k not in standard))
    lines = [
        "| round | reward | length (tokens) | finished | KL | items | loss | generate / label / train s |"
        + "".join(f" {k.replace('_', ' ')} |" for k in extra),
        "|---|---|---|---|---|---|---|---|" + "---|" * len(extra),
    ]
    for r in rounds:
        lines.append(
            f"| {int(r['round'])} | {r['reward_mean']:+.3f} ± {r['reward_std']:.3f} | "
            f"{r['mean_length']:.1f} | {r['finished']:.2f} | {r['kl']:.4f} | {int(r['items'])} | "
            f"{r['loss']:.4f} | {r['generate_s']:.0f} / {r['label_s']:.0f} / "
            f"{r['train_s']:.0f} |" + "".join(f" {r.get(k, math.nan):.2f} |" for k in extra)
        )
    return "\n".join(lines)


def gradient_cosine_table(records: list[dict[str, Any]]) -> str:
    """P3's Lemma 6.2 quantity over training (:mod:`preftune.training.gradient_cosine_hook`) as a table."""
    lines = [
        "cos(∇θ log π(y_w), ∇θ log π(y_l)) on held-out pairs (P3, Lemma 6.2: a negative gradient raises "
        "log π(y_w) when it is ≤ 0):",
        "",
        "| step | mean ± s.e. | pairs ≤ 0 |",
        "|---|---|---|",
    ]
    for r in records:
        lines.append(f"| {r['step']} | {r['mean']:.4f} ± {r['stderr']:.4f} | {r['nonpositive']} of {r['count']} |")
    return "\n".join(lines)
