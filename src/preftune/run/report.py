"""What a run leaves for a person: a PNG of the training curves and the held-out table of ``summary.md``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from preftune.evaluation.names import CONSOLE_METRICS, DESCRIPTIONS, SUMMARY_METRICS
from preftune.files import atomic_write_target

# The loss, the metrics a run prints at each held-out evaluation, and the optimiser's state.
CURVES = [
    ("loss", "loss (and each term)"),
    *((name, DESCRIPTIONS[name]) for name in CONSOLE_METRICS),
    ("grad_norm", "gradient norm"),
    ("lr", "learning rate"),
]


# An on-policy run's rounds (RoundStats' fields), one panel each.
ROUND_CURVES = [
    ("reward_mean", "reward of the round's samples (mean ± s.d.)"),
    ("kl", "KL to the reference (per response, nats)"),
    ("mean_length", "mean response length (tokens)"),
]


def plot_curves(
    history: Sequence[dict[str, float]],
    evals: Sequence[dict[str, Any]],
    path: Path,
    title: str,
    rounds: Sequence[dict[str, float]] = (),
) -> Path:
    """Training curves (per step) with held-out evaluations as markers, and for an on-policy run its
    rounds' reward, KL and length (per round); written atomically."""
    panels = len(CURVES) + (len(ROUND_CURVES) if rounds else 0)
    rows = -(-panels // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(14, 3.75 * rows), constrained_layout=True, squeeze=False)
    steps = [h["step"] for h in history]
    for ax in axes.flat[panels:]:
        ax.set_visible(False)
    for ax, (key, label) in zip(axes.flat[len(CURVES) :], ROUND_CURVES if rounds else [], strict=False):
        _round_panel(ax, rounds, key, label)
    for ax, (key, label) in zip(axes.flat, CURVES, strict=False):
        keys = [key] + ([k for k in history[0] if k.startswith("loss/")] if key == "loss" and history else [])
        for k in keys:
            values = [h.get(k, float("nan")) for h in history]
            ax.plot(steps, values, label="train" if k == key else k.removeprefix("loss/"), lw=1.4)
        eval_points = [(e["step"], e[key]["mean"]) for e in evals if key in e]
        if eval_points:
            xs, ys = zip(*eval_points, strict=True)
            ax.plot(xs, ys, "o--", color="black", label="held-out", ms=5)
        ax.set_title(label)
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    tmp = atomic_write_target(path)
    try:
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return path


def _round_panel(ax: Any, rounds: Sequence[dict[str, float]], key: str, label: str) -> None:
    """One per-round quantity against the round (the reward with its spread)."""
    xs = [int(r["round"]) for r in rounds]
    ys = [r.get(key, float("nan")) for r in rounds]
    ax.plot(xs, ys, "o-", lw=1.4, ms=4)
    if key == "reward_mean":
        low = [y - r.get("reward_std", 0.0) for y, r in zip(ys, rounds, strict=True)]
        high = [y + r.get("reward_std", 0.0) for y, r in zip(ys, rounds, strict=True)]
        ax.fill_between(xs, low, high, alpha=0.2)
    ax.set_title(label)
    ax.set_xlabel("round")
    ax.grid(alpha=0.3)


def format_eval_table(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """A Markdown table of held-out metrics before → after, with standard errors."""
    rows = ["| metric | before | after |", "|---|---|---|"]

    def cell(entry: dict[str, Any] | None, name: str) -> str:
        if not entry or name not in entry:
            return "–"
        value = entry[name]
        stderr = value.get("stderr")
        return f"{value['mean']:.4f}" + (f" ± {stderr:.4f}" if stderr == stderr and stderr is not None else "")

    for name in SUMMARY_METRICS:
        if (before and name in before) or (after and name in after):
            rows.append(f"| {name} | {cell(before, name)} | {cell(after, name)} |")
    return "\n".join(rows)
