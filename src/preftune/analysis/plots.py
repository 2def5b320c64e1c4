"""Figures of the gradient analysis, one per :class:`~preftune.analysis.table.Analysis` (docs/methods.md §3).

Built on :class:`matplotlib.figure.Figure` directly (no pyplot, no global backend state; PNGs are
rendered by Agg). Every objective keeps one colour, line style and marker across all figures.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullLocator

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


def _plot(ax: Axes, xs: list[float], ys: list[float], style: Style, **kw: object) -> None:
    """A curve in the objective's colour; markers phased by objective so coinciding curves stay visible."""
    every = max(len(xs) // 10, 1)
    phase = kw.pop("phase", 0)
    options = {
        "color": style.colour,
        "linestyle": style.linestyle,
        "marker": style.marker,
        "markevery": ((style.offset * every // 5 + int(phase)) % every, every),  # type: ignore[call-overload]
        "markersize": 6,
        "linewidth": 2,
        "markerfacecolor": "none",
        **kw,
    }
    ax.plot(xs, ys, **options)


def _positive(ys: list[float]) -> list[float]:
    """Zeros become NaN so that log axes skip them."""
    return [y if y > 0 else math.nan for y in ys]


def _in_free_band(ax: Axes, analysis: Analysis, series: str, lines: list[str]) -> None:
    """Write ``lines`` in a box in the widest horizontal band of the panel that no curve crosses.

    Left out when no band is tall enough: the numbers stay in the CSV and the headline.
    """
    low, high = ax.get_ylim()
    values = [v for spec in analysis.objectives() for v in analysis.series(spec, series)[1] if math.isfinite(v)]
    heights = sorted({0.0, 1.0} | {min(max((v - low) / (high - low), 0.0), 1.0) for v in values})
    bottom, top = max(itertools.pairwise(heights), key=lambda gap: gap[1] - gap[0])
    if top - bottom < 0.045 * (len(lines) + 1):
        return
    box = {"boxstyle": "round", "facecolor": "white", "edgecolor": "#999", "alpha": 0.9}
    text = "\n".join(lines)
    ax.text(0.5, (bottom + top) / 2, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, bbox=box)


def _coinciding(ax: Axes, analysis: Analysis, series: str) -> None:
    """Name the groups of objectives whose ``series`` curves are identical (one would hide the others)."""
    groups: dict[tuple[float, ...], list[str]] = {}
    for spec in analysis.objectives():
        groups.setdefault(tuple(round(y, 12) for y in analysis.series(spec, series)[1]), []).append(spec)
    lines = [" = ".join(specs) for specs in groups.values() if len(specs) > 1]
    if lines:
        _in_free_band(ax, analysis, series, ["identical curves:", *lines])


def _values_box(ax: Axes, analysis: Analysis, series: str, x: float, what: str) -> None:
    """A box listing every objective's value of ``series`` at ``x`` (tells apart close curves)."""
    lines = [f"{spec}: {analysis.at(spec, series, x):.4g}" for spec in analysis.objectives()]
    _in_free_band(ax, analysis, series, [f"{what} = {x:g}:", *lines])


def _frame(analysis: Analysis, panels: int, width: float = 6.2) -> tuple[Figure, list[Axes]]:
    fig = Figure(figsize=(width * panels, 5.6), dpi=110)
    axes = list(fig.subplots(1, panels, squeeze=False)[0])
    fig.suptitle(analysis.title, fontsize=13, fontweight="bold", y=0.985)
    fig.text(0.5, 0.915, f"Expected: {analysis.expected}", ha="center", fontsize=10, style="italic", color="#444")
    for ax in axes:
        ax.grid(True, which="major", alpha=0.3)
    return fig, axes


def _legend(
    fig: Figure, analysis: Analysis, style: dict[str, Style], zero: set[str] | None = None, note: str = "≡ 0"
) -> int:
    """A figure-level legend of the objectives (colour, line style, marker) below the panels; returns its length."""
    zero = zero or set()
    handles = [
        Line2D([], [], color=s.colour, linestyle=s.linestyle, marker=s.marker, markerfacecolor="none", linewidth=2)
        for spec, s in style.items()
        if spec in analysis.objectives()
    ]
    labels = [f"{spec}  ({note})" if spec in zero else spec for spec in style if spec in analysis.objectives()]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), frameon=False, fontsize=10)
    return len(labels)


def _finish(fig: Figure, objectives: int) -> Figure:
    """Lay out the panels between the titles and the objectives' legend (one row per 5 objectives)."""
    fig.tight_layout(rect=(0, 0.03 + 0.04 * math.ceil(objectives / 5), 1, 0.92))
    return fig


def _logit_x(ax: Axes) -> None:
    """A logit-scale p axis with plain major labels only (minor labels are slow and cluttered)."""
    ax.set_xscale("logit")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks([0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999], ["0.001", "0.01", "0.1", "0.5", "0.9", "0.99", "0.999"])


def weight_vs_probability_figure(analysis: Analysis, style: dict[str, Style]) -> Figure:
    """Two panels: w_good(p) (linear y) and w_bad(p) (log y), p on a logit axis."""
    fig, (good, bad) = _frame(analysis, 2)
    zero: set[str] = set()
    n = analysis.settings.get("n")
    for spec in analysis.objectives():
        xs, ys = analysis.series(spec, "w_good")
        _plot(good, xs, ys, style[spec])
        xs, ys = analysis.series(spec, "w_bad")
        if any(y > 0 for y in ys):
            _plot(bad, xs, _positive(ys), style[spec])
        else:
            zero.add(spec)
    good.set_ylim(bottom=0)
    _coinciding(good, analysis, "w_good")
    bad.set_yscale("log")
    panels = (
        (good, "w_good", "-", "w", "push-up on a good token"),
        (bad, "w_bad", "+", "l", "push-down on a bad token"),
    )
    for ax, series, sign, y, what in panels:
        _logit_x(ax)
        ax.set_xlabel("p = π(token), the same for all n tokens of the response  (logit scale)")
        ax.set_ylabel(f"{series} per token  ({what})")
        ax.set_title(f"{series} = {sign}∂L/∂log π(y_{y},t),  n = {n}")
    return _finish(fig, _legend(fig, analysis, style, zero, note="w_bad ≡ 0"))


def weight_vs_margin_figure(analysis: Analysis, style: dict[str, Style]) -> Figure:
    """Left: ``dpo(beta=β)`` for each β with the closed form; right: the listed objectives built on h."""
    fig, (sweep, listed) = _frame(analysis, 2)
    betas = analysis.settings.get("sweep", {})
    assert isinstance(betas, dict)
    for (spec, beta), linestyle in zip(betas.items(), BETA_STYLES * len(betas), strict=False):
        xs, ys = analysis.series(spec, "w_good")
        sweep.plot(xs, ys, color="black", linestyle=linestyle, linewidth=2, label=f"{spec}: w_good = w_bad")
        closed = [beta / (1 + math.exp(beta * h)) for h in xs]
        last = spec == list(betas)[-1]
        sweep.plot(xs, closed, color="#ffbf00", linewidth=0.9, label="β·σ(-βh), closed form" if last else None)
    sweep.set_title("dpo for several β: autograd (black) on β·σ(-βh) (yellow)")
    sweep.legend(fontsize=9, loc="center right")
    listed_specs = [spec for spec in analysis.objectives() if spec in style]
    for spec in listed_specs:
        for series, linestyle, fill, phase in (("w_good", "-", "none", 0), ("w_bad", "--", style[spec].colour, 3)):
            xs, ys = analysis.series(spec, series)
            _plot(listed, xs, ys, style[spec], linestyle=linestyle, markerfacecolor=fill, phase=phase)
    same = [spec for spec in listed_specs if analysis.series(spec, "w_good") == analysis.series(spec, "w_bad")]
    title = "\n".join(textwrap.wrap("w_good = w_bad (curves coincide): " + ", ".join(same), 45)) if same else None
    key = listed.legend(
        [
            Line2D([], [], color="grey", linestyle="-", marker="o", markerfacecolor="none"),
            Line2D([], [], color="grey", linestyle="--", marker="o", markerfacecolor="grey"),
        ],
        ["w_good (solid, hollow)", "w_bad (dashed, filled)"],
        title=title,
        fontsize=9,
    )
    key.get_title().set_fontsize(9)
    listed.set_title("objectives of the list built on h")
    if not any(spec in style for spec in analysis.objectives()):
        listed.text(0.5, 0.5, "no listed objective is built on the margin h", ha="center", transform=listed.transAxes)
    for ax in (sweep, listed):
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("margin h = (S_w − S_ref,w) − (S_l − S_ref,l)  [nats]")
        ax.set_ylabel("weight per token (w_good, w_bad)")
    return _finish(fig, _legend(fig, analysis, style))


def logit_space_figure(analysis: Analysis, style: dict[str, Style]) -> Figure:
    """Push-up and push-down on the target logit vs p (with the tail's share), and per-token pushes by rank."""
    fig, (up, down, ranks) = _frame(analysis, 3, width=5.6)
    settings = analysis.settings
    for ax, push, what in ((up, "up", "good token pushed up"), (down, "down", "bad token pushed down")):
        for spec in analysis.objectives():
            for series, linestyle, phase in ((f"{push}/target", "-", 0), (f"{push}/tail", ":", 2)):
                xs, ys = analysis.series(spec, series)
                _plot(ax, xs, _positive(ys), style[spec], linestyle=linestyle, phase=phase)
        _logit_x(ax)
        ax.set_yscale("log")
        ax.set_xlabel("p = π(target token)  (logit scale)")
        ax.set_ylabel("|∂L/∂z|")
        ax.set_title(f"{what}: target logit vs tail")
        ax.legend(
            [Line2D([], [], color="grey", linestyle="-"), Line2D([], [], color="grey", linestyle=":")],
            ["target logit: w(1−p) (= total on the rest)", f"sum over the {settings['tail_tokens']:,}-token tail"],
            fontsize=8,
            loc="lower center",
        )
    for spec in analysis.objectives():
        xs, ys = analysis.series(spec, "down/per_token")
        if any(y > 0 for y in ys):
            _plot(ranks, xs, _positive(ys), style[spec])
    share = settings["share_of_rest"]
    assert isinstance(share, dict)
    top_k, tail_start = int(settings["top_k"]), int(settings["vocab_size"]) - int(settings["tail_tokens"])  # type: ignore[call-overload]
    ranks.axvspan(1, top_k, color="#dddddd", alpha=0.6)
    ranks.axvspan(tail_start, int(settings["vocab_size"]), color="#f4d7d7", alpha=0.6)  # type: ignore[call-overload]
    ranks.text(0.03, 0.05, f"top {top_k}:\n{share['top_k']:.0%} of the push", transform=ranks.transAxes, fontsize=9)
    ranks.text(
        0.97,
        0.93,
        f"tail (p_j < 1/V):\n{share['tail']:.0%} of the push",
        transform=ranks.transAxes,
        fontsize=9,
        ha="right",
        va="top",
    )
    ranks.set_xscale("log")
    ranks.set_yscale("log")
    ranks.set_xlabel("rank of a non-target token (1 = likeliest)")
    ranks.set_ylabel("|∂L/∂z_j| = w·p_j  (logit raised: mass moved onto it)")
    ranks.set_title(f"push-down at p = {settings['per_token_at_p']:g}: every other logit")
    no_push = {spec for spec in analysis.objectives() if not any(analysis.series(spec, "down/target")[1])}
    return _finish(fig, _legend(fig, analysis, style, no_push, note="w_bad ≡ 0: no push-down"))


def literal_similarity_figure(analysis: Analysis, style: dict[str, Style]) -> Figure:
    """Net weight per shared token vs the shared fraction s (left) and the gross push before cancelling (right)."""
    fig, (net, gross) = _frame(analysis, 2)
    for ax, series in ((net, "net_per_token"), (gross, "gross_per_token")):
        for spec in analysis.objectives():
            xs, ys = analysis.series(spec, series)
            _plot(ax, xs, ys, style[spec], markevery=None)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel("s = fraction of tokens shared by chosen and rejected (shared prefix)")
        ax.set_xlim(0, 1.02)
    _values_box(net, analysis, "net_per_token", 0.5, "net per shared token at s")
    net.set_ylabel("net weight w_good − w_bad per shared token")
    net.set_title("net push on a shared token (>0 raised, <0 lowered, 0 cancel)")
    gross.set_ylabel("gross weight w_good + w_bad per shared token")
    gross.set_title("gross push on a shared token (before the two cancel)")
    return _finish(fig, _legend(fig, analysis, style))


FIGURES = {
    "weight_vs_probability": weight_vs_probability_figure,
    "dpo_weight_vs_margin": weight_vs_margin_figure,
    "logit_space": logit_space_figure,
    "literal_similarity": literal_similarity_figure,
}
