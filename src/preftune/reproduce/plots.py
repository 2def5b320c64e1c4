"""Figures of a reproduction report (matplotlib's Agg canvas, no pyplot; saved with
:func:`preftune.lab.plots.save_png`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from preftune.lab.plots import PALETTE
from preftune.reproduce.verdicts import wilson


def contrast_figure(panels: Mapping[str, Sequence[tuple[str, float, float, float]]], margin: float) -> Figure:
    """A forest plot per panel (``title -> [(name, estimate, low, high)]``) with the ±``margin`` band shaded."""
    figure = Figure(figsize=(6 * len(panels), 0.6 * max(len(v) for v in panels.values()) + 1.6), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    for ax, (title, rows) in zip(axes, panels.items(), strict=True):
        ax.axvspan(-margin, margin, color="#ddd", label=f"±{margin:g}")
        ax.axvline(0.0, color="#888", linewidth=0.8)
        for y, (_, estimate, low, high) in enumerate(rows):
            ax.errorbar(
                [estimate], [y], xerr=[[estimate - low], [high - estimate]], fmt="o", color=PALETTE[0], capsize=4
            )
        ax.set_yticks(range(len(rows)), [name for name, *_ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("difference of mean true reward over training (95% CI)")
        ax.grid(alpha=0.3, axis="x")
    axes[0].legend(fontsize=8, loc="lower right")
    return figure


def gradient_cosine_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure:
    """Left: mean cosine ± standard error against the step, per objective; right: the fraction of pairs with
    cosine ≤ 0 and its 95% Wilson interval."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    mean_ax, share_ax = figure.subplots(1, 2, sharex=True)
    for i, (objective, records) in enumerate(runs.items()):
        if not records:
            continue
        colour = PALETTE[i % len(PALETTE)]
        steps = [r["step"] for r in records]
        means = [r["mean"] for r in records]
        errors = [r["stderr"] if r.get("stderr") is not None else 0.0 for r in records]
        mean_ax.errorbar(steps, means, yerr=errors, color=colour, marker="o", capsize=3, label=objective)
        shares = [wilson(int(r["nonpositive"]), int(r["count"])) for r in records]
        share_ax.plot(steps, [s.estimate for s in shares], color=colour, marker="o", label=objective)
        share_ax.fill_between(steps, [s.low for s in shares], [s.high for s in shares], color=colour, alpha=0.15)
    mean_ax.axhline(0.0, color="#888", linewidth=0.8)
    mean_ax.set_ylabel("cos(∇ log π(y_w), ∇ log π(y_l)), mean ± s.e.")
    share_ax.set_ylabel("fraction of pairs with cosine ≤ 0")
    share_ax.set_ylim(0, 1)
    for ax in (mean_ax, share_ax):
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle("P3 Lemma 6.2 on held-out pairs: a negative gradient raises log π(y_w) where the cosine ≤ 0")
    return figure


def kl_sweep_figure(runs: Sequence[Any], mode: int = 2, covered: int = 0) -> Figure:
    """p[mode] (left) and p[covered] (right) against steps for every run (``.optimiser``, ``.lr``, ``.forward``,
    ``.reverse``): solid reverse KL, dashed forward KL."""
    figure = Figure(figsize=(11, 4), layout="constrained")
    axes = figure.subplots(1, 2, sharex=True)
    for i, run in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        label = f"{run.optimiser}, lr {run.lr:g}"
        for ax, category in zip(axes, (mode, covered), strict=True):
            ax.plot(run.reverse[:, category].tolist(), color=colour, linestyle="-", label=f"reverse, {label}")
            ax.plot(run.forward[:, category].tolist(), color=colour, linestyle="--", label=f"forward, {label}")
    for ax, category in zip(axes, (mode, covered), strict=True):
        ax.set_title(f"mass of category {category}")
        ax.set_xlabel("steps")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    figure.suptitle("P3 KL toy, every optimiser and step size: solid reverse KL(p‖q), dashed forward KL(q‖p)")
    return figure


def curves_figure(
    curves: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    title: str,
    labels: Mapping[str, str] | None = None,
) -> Figure:
    """One panel per metric (``variant -> metric -> [(step, value)]``, the metrics of the first variant in order):
    the value against the training step, one line per variant; ``labels``: the metrics' axis labels."""
    metrics = list(next(iter(curves.values()))) if curves else []
    figure = Figure(figsize=(5.5 * max(len(metrics), 1), 4), layout="constrained")
    axes = figure.subplots(1, max(len(metrics), 1), squeeze=False)[0]
    styles = ("-", "--", ":", "-.")  # lines that coincide (a penalty that never acts) stay visible
    for i, (variant, by_metric) in enumerate(curves.items()):
        colour, style = PALETTE[i % len(PALETTE)], styles[i % len(styles)]
        for ax, metric in zip(axes, metrics, strict=False):
            points = list(by_metric.get(metric, ()))
            xs, ys = [s for s, _ in points], [v for _, v in points]
            ax.plot(xs, ys, color=colour, linestyle=style, marker="o", markersize=7 - i, label=variant)
    for ax, metric in zip(axes, metrics, strict=False):
        ax.set_xlabel("training step")
        ax.set_ylabel((labels or {}).get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    return figure
