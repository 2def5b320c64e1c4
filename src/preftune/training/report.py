"""What a run leaves for a person: a PNG of the training curves and a Markdown summary."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from preftune.modeling.cache import write_atomic

CURVES = [
    ("loss", "loss (and each term)"),
    ("accuracy", "preference accuracy (h > 0)"),
    ("margin", "margin h"),
    ("chosen_drift", "chosen drift A_w − A_ref,w"),
    ("grad_norm", "gradient norm"),
    ("lr", "learning rate"),
]


def plot_curves(history: Sequence[dict[str, float]], evals: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Training curves (per step) with held-out evaluations as markers; written atomically."""
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5), constrained_layout=True)
    steps = [h["step"] for h in history]
    for ax, (key, label) in zip(axes.flat, CURVES, strict=True):
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
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` through a unique temporary file and a rename, with the umask's file mode."""
    write_atomic(path, text)


def format_eval_table(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """A Markdown table of held-out metrics before → after, with standard errors."""
    names = ["accuracy", "margin", "likelihood_accuracy", "chosen_drift", "rewards/chosen", "rewards/rejected",
             "chosen_perplexity"]  # fmt: skip
    rows = ["| metric | before | after |", "|---|---|---|"]

    def cell(entry: dict[str, Any] | None, name: str) -> str:
        if not entry or name not in entry:
            return "–"
        value = entry[name]
        stderr = value.get("stderr")
        return f"{value['mean']:.4f}" + (f" ± {stderr:.4f}" if stderr == stderr and stderr is not None else "")

    for name in names:
        if (before and name in before) or (after and name in after):
            rows.append(f"| {name} | {cell(before, name)} | {cell(after, name)} |")
    return "\n".join(rows)
