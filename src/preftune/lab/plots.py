"""Figures of P3's didactic studies (Tajwar et al. 2024, docs/methods.md §7), PNGs written atomically.

Built on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot, no global state); each
PNG is rendered to memory and published by :func:`preftune.files.write_atomic`.
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from preftune.files import write_atomic
from preftune.lab.bandit import BanditResult, Curve, t_quantile
from preftune.lab.kl_toy import KLToyResult

if TYPE_CHECKING:
    from preftune.lab.length import LengthResult
    from preftune.lab.sequence_bandit import SequenceBanditResult

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")
REGIME_STYLE = {"on_policy": "-", "offline": "--"}
KL_LINESTYLES = ("-", "-", "-", (0, (4, 3)))


def save_png(figure: Figure, path: Path) -> Path:
    """Render ``figure`` with Agg and write it to ``path`` atomically."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return write_atomic(path, buffer.getvalue())


def _mean_band(
    ax: Axes, xs: list[float], values: Tensor, colour: str, linestyle: Any, label: str, **style: Any
) -> None:
    """The mean of ``values`` ``[S, T]`` over its S seeds against ``xs`` with a shaded 95% t interval (none
    for one seed); ``style``: more ``plot`` settings (markers)."""
    mean = values.double().mean(0)
    ax.plot(xs, mean.tolist(), color=colour, linestyle=linestyle, linewidth=1.6, label=label, **style)
    n = values.shape[0]
    if n > 1:
        half = t_quantile(n - 1) * values.double().std(0, correction=1) / n**0.5
        ax.fill_between(xs, (mean - half).tolist(), (mean + half).tolist(), color=colour, alpha=0.15, linewidth=0)


def _band(ax: Axes, xs: list[float], curve: Curve, colour: str) -> None:
    """A bandit curve's reward: mean over seeds with its 95% band."""
    label = f"{curve.method} ({curve.regime.replace('_', '-')})"
    _mean_band(ax, xs, curve.rewards, colour, REGIME_STYLE[curve.regime], label)


def bandit_reward_figure(
    result: BanditResult | SequenceBanditResult, name: str = "P3 bandit", steps: list[int] | None = None
) -> Figure:
    """True reward against gradient steps (left) and samples drawn (right), one line per method × regime.

    ``steps``: the steps of the curves' points (default 0, 1, 2, ...); ``name`` opens the title.
    """
    figure = Figure(figsize=(12, 4.6), layout="constrained")
    by_steps, by_samples = figure.subplots(1, 2, sharey=True)
    colours = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(result.config.methods)}
    for curve in result.curves:
        _band(by_steps, steps or list(range(curve.rewards.shape[1])), curve, colours[curve.method])
        _band(by_samples, curve.samples.tolist(), curve, colours[curve.method])
    for ax, xlabel in ((by_steps, "gradient steps"), (by_samples, "samples drawn")):
        ax.axhline(result.config.threshold, color="#999", linewidth=0.8, linestyle=":")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    by_steps.set_ylabel("true reward E_π[r]")
    by_samples.legend(fontsize=7, ncol=2, loc="best")
    seeds = result.config.seeds
    figure.suptitle(
        f"{name}, {result.config.peak} peak: mean over {seeds} seed(s), shaded 95% CI (solid on-policy, dashed offline)"
    )
    return figure


def bandit_histogram_figure(
    result: BanditResult | SequenceBanditResult, name: str = "P3 bandit", what: str = "action a"
) -> Figure:
    """π_θ (mean over contexts and seeds) at the snapshot steps: rows regimes, columns methods.

    For the sequence bandit the curves hold token marginals: pass ``what="token v"``."""
    config = result.config
    rows, cols = len(config.regimes), len(config.methods)
    figure = Figure(figsize=(2.6 * cols + 1, 2.2 * rows + 0.8), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False, sharex=True, sharey=True)
    steps = config.snapshot_steps()
    reward = result.bandit.rewards
    for curve in result.curves:
        ax = axes[config.regimes.index(curve.regime)][config.methods.index(curve.method)]
        peak = float(curve.histograms.max())
        ax.fill_between(range(len(reward)), (reward * peak).tolist(), color="#ccc", label="reward, scaled")
        for i, step in enumerate(steps):
            shade = 0.25 + 0.75 * i / max(len(steps) - 1, 1)
            ax.plot(curve.histograms[i].tolist(), color=(0.1, 0.3, 0.7, shade), linewidth=1.2, label=f"step {step}")
        ax.set_title(f"{curve.method}, {curve.regime.replace('_', '-')}", fontsize=9)
    for ax in axes[-1]:
        ax.set_xlabel(what)
    axes[0][-1].legend(fontsize=6)
    figure.suptitle(f"{name}, {config.peak} peak: policy histograms over {what} (mean over contexts and seeds)")
    return figure


def sequence_bandit_figures(result: SequenceBanditResult) -> tuple[Figure, Figure]:
    """The sequence bandit's reward curves (at its evaluated steps) and token marginals, as the bandit's."""
    name = f"P3 sequence bandit (V = {result.config.vocab}, L = {result.config.length})"
    return (
        bandit_reward_figure(result, name, list(result.config.eval_steps())),
        bandit_histogram_figure(result, name, "token v"),
    )


def kl_toy_figure(result: KLToyResult) -> Figure:
    """Mass of each category against steps, forward KL (left) and reverse KL (right); dotted: target q."""
    figure = Figure(figsize=(10, 4), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    for ax, (name, masses) in zip(
        panels, (("forward KL(q‖p)", result.forward), ("reverse KL(p‖q)", result.reverse)), strict=True
    ):
        for i in range(masses.shape[1]):
            colour = PALETTE[i % len(PALETTE)]
            style = KL_LINESTYLES[i % len(KL_LINESTYLES)]  # categories with equal mass (1 and 3) stay visible
            ax.plot(masses[:, i].tolist(), color=colour, linestyle=style, linewidth=1.8, label=f"category {i}")
            ax.axhline(result.config.q[i], color=colour, linestyle=":", linewidth=1)
        ax.set_title(name)
        ax.set_xlabel("gradient steps")
        ax.grid(alpha=0.3)
    panels[0].set_ylabel("p_θ(category)")
    panels[1].legend(fontsize=8)
    figure.suptitle(f"P3 KL toy: p0 = {list(result.config.p0)}, q = {list(result.config.q)}, lr = {result.config.lr:g}")
    return figure


def length_figure(results: LengthResult | Sequence[LengthResult]) -> Figure:
    """P3's length tasks, one study or several that differ only in the seed: the task's measure (mean length,
    or distance to the mode) on held-out prompts against steps per method, mean over seeds with a 95% band
    (left; solid on-policy, dashed offline); the offline datasets' lengths, pooled over seeds (right)."""
    from preftune.lab.length import ON_POLICY

    runs = [results] if not isinstance(results, Sequence) else list(results)
    config = runs[0].config
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    curves_ax, data_ax = figure.subplots(1, 2, width_ratios=(3, 2))
    for i, curve in enumerate(runs[0].curves):
        same = [next(c for c in run.curves if c.method == curve.method) for run in runs]
        points = min(len(c.measures) for c in same)  # a run that stopped short has fewer checkpoints
        values = torch.tensor([c.values(config.task)[:points] for c in same], dtype=torch.float64)
        style = REGIME_STYLE["on_policy" if curve.method in ON_POLICY else "offline"]
        _mean_band(
            curves_ax,
            curve.steps[:points],
            values,
            PALETTE[i % len(PALETTE)],
            style,
            curve.method,
            marker="o",
            markersize=3,
        )
    curves_ax.set_xlabel("optimiser steps")
    curves_ax.set_ylabel(f"mean {runs[0].target} (tokens)")
    curves_ax.set_ylim(bottom=0)
    curves_ax.grid(alpha=0.3)
    curves_ax.legend(fontsize=8)
    _length_data(data_ax, runs)
    seeds = f" over {len(runs)} seeds (mean, 95% band)" if len(runs) > 1 else ""
    figure.suptitle(
        f"P3 {config.task} length{seeds}\n{config.model} warmed up, LoRA r={config.lora_rank}, lr {config.lr:g}, "
        f"M = {config.batch_size}, C = {config.samples_per_prompt}; held-out prompts, fixed sampling seed",
        fontsize=10,
    )
    return figure


def _length_data(ax: Axes, runs: Sequence[LengthResult]) -> None:
    """The offline datasets' length histogram pooled over ``runs``, greyed below the skew floor, with the mode(s)."""
    pooled: Counter[int] = Counter()
    for run in runs:
        pooled.update(run.dataset.summary()["histogram"])
    floors = sorted({run.dataset.floor for run in runs if run.dataset.floor is not None})
    kept = [not floors or n >= floors[0] for n in pooled]
    ax.bar(list(pooled), list(pooled.values()), color=["#1f77b4" if k else "#ccc" for k in kept])
    for mode in sorted({run.dataset.mode for run in runs}):
        ax.axvline(mode, color="#d62728", linestyle=":", linewidth=1.2, label=f"mode {mode}")
    for floor in floors:
        ax.axvline(floor - 0.5, color="#555", linestyle="--", linewidth=1, label=f"kept ≥ {floor}")
    ax.set_xlabel("response length (tokens)")
    ax.set_ylabel("dataset samples" + (", all seeds" if len(runs) > 1 else ""))
    ax.set_title(f"offline data: {sum(run.dataset.summary()['pairs'] for run in runs)} pairs", fontsize=9)
    ax.legend(fontsize=8)
