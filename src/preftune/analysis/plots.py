"""Figures of the gradient analysis, one per :class:`~preftune.analysis.table.Analysis` (METHODS.md §3).

Built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state; PNGs are
rendered by Agg). Every objective keeps one colour, line style and marker across all figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from preftune.analysis.table import Analysis

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
LINESTYLES = ("-", "--", "-.", ":", (0, (5, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<")
BETA_STYLES = ((0, (1, 1)), "--", "-")


@dataclass(frozen=True)
class Style:
    """How one objective is drawn."""

    colour: str
    linestyle: str | tuple
    marker: str
    offset: int  # marker phase, so coinciding curves still show every marker


def styles(objectives: Sequence[str]) -> dict[str, Style]:
    """One distinct style per objective, in order (stable across figures)."""
    return {
        spec: Style(PALETTE[i % len(PALETTE)], LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)], i)
        for i, spec in enumerate(objectives)
    }


def _plot(ax: Axes, xs: list[float], ys: list[float], style: Style, label: str | None, **kw: object) -> None:
    every = max(len(xs) // 10, 1)
    kw = {"linestyle": style.linestyle, "marker": style.marker, **kw}
    ax.plot(xs, ys, color=style.colour, label=label, markevery=(style.offset * every // 5 % every, every),
            markersize=6, linewidth=2, markerfacecolor="none", **kw)  # fmt: skip


def _positive(ys: list[float]) -> list[float]:
    """Zeros become NaN so that log axes skip them."""
    return [y if y > 0 else math.nan for y in ys]


def _frame(analysis: Analysis, panels: int, width: float = 6.2) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * panels, 5.6), dpi=110)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    fig.suptitle(analysis.title, fontsize=13, fontweight="bold", y=0.985)
    fig.text(0.5, 0.915, f"Expected: {analysis.expected}", ha="center", fontsize=10, style="italic", color="#444")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    return fig, axes


def _legend(fig: Figure, analysis: Analysis, style: dict[str, Style], zero: set[str] = frozenset()) -> None:
    handles = [
        Line2D([], [], color=s.colour, linestyle=s.linestyle, marker=s.marker, markerfacecolor="none", linewidth=2)
        for spec, s in style.items()
        if spec in analysis.objectives()
    ]
    labels = [f"{spec}  (≡ 0, not on log axis)" if spec in zero else spec for spec in style if spec in analysis.objectives()]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False, fontsize=10)


def _finish(fig: Figure) -> Figure:
    fig.tight_layout(rect=(0, 0.07, 1, 0.9))
    return fig


def weight_vs_probability_figure(analysis: Analysis, style: dict[str, Style]) -> Figure:
    """Two panels: w_good(p) and w_bad(p), log y, logit x."""
    fig, (good, bad) = _frame(analysis, 2)
    zero: set[str] = set()
    n = analysis.settings.get("n")
    for ax, series, what in ((good, "w_good", "push-up on a good token"), (bad, "w_bad", "push-down on a bad token")):
        for spec in analysis.objectives():
            xs, ys = analysis.series(spec, series)
            if not any(y > 0 for y in ys):
                zero.add(spec) if series == "w_bad" else None
                continue
            _plot(ax, xs, _positive(ys), style[spec], None)
        ax.set_xscale("logit")
        ax.set_yscale("log")
        ax.set_xlabel("p = π(token), the same for all n tokens of the response  (logit scale)")
        ax.set_ylabel(f"{series} per token  ({what})")
        ax.set_title(f"{series} = {'-' if series == 'w_good' else '+'}∂L/∂log π(y_{series[2]},t),  n = {n}")
    _legend(fig, analysis, style, zero)
    return _finish(fig)


def weight_vs_margin_figure(analysis: Analysis, style: dict[str, Style]) -> Figure:
    """Left: ``dpo(beta=β)`` for each β with the closed form; right: the listed objectives built on h."""
    fig, (sweep, listed) = _frame(analysis, 2)
    betas = [spec for spec in analysis.objectives() if spec.startswith("dpo(beta=") and spec not in style]
    for spec, linestyle in zip(betas, BETA_STYLES * len(betas), strict=False):
        xs, ys = analysis.series(spec, "w_good")
        sweep.plot(xs, ys, color="black", linestyle=linestyle, linewidth=2, label=f"{spec}: w_good = w_bad")
        beta = float(spec[len("dpo(beta=") : -1])
        closed = [beta / (1 + math.exp(beta * h)) for h in xs]
        sweep.plot(xs, closed, color="#ffbf00", linewidth=0.9, label="β·σ(-βh), closed form" if spec == betas[0] else None)
    sweep.set_title("dpo for several β (autograd, black) and β·σ(-βh) (yellow)")
    sweep.legend(fontsize=9)
    for spec in analysis.objectives():
        if spec in style:
            for series, fill in (("w_good", "none"), ("w_bad", style[spec].colour)):
                xs, ys = analysis.series(spec, series)
                _plot(listed, xs, ys, style[spec], None, markerfacecolor=fill)
    listed.set_title("listed objectives built on h: hollow = w_good, filled = w_bad")
    if not any(spec in style for spec in analysis.objectives()):
        listed.text(0.5, 0.5, "no listed objective is built on the margin h", ha="center", transform=listed.transAxes)
    for ax in (sweep, listed):
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("margin h = (S_w − S_ref,w) − (S_l − S_ref,l)  [nats]")
        ax.set_ylabel("weight per token (w_good, w_bad)")
    _legend(fig, analysis, style)
    return _finish(fig)
