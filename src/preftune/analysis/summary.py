"""Headline lines of the gradient report, read off the computed numbers (nothing hard-coded)."""

from __future__ import annotations

from preftune.analysis.table import Analysis

EXACT = 1e-12


def _shape(values: list[float], at_99: float, at_999: float) -> str:
    """A word for how a weight curve behaves in p: zero, flat, unbounded as p→1, or bounded."""
    top, bottom = max(values), min(values)
    if max(abs(top), abs(bottom)) <= EXACT:
        return "zero"
    if top - bottom <= 1e-9 * max(abs(top), abs(bottom)):
        return "flat in p"
    if at_999 > 5 * at_99 > 0:
        return "unbounded as p→1"
    return f"bounded (at most {top:.3g} over p ∈ [{0.001:g}, {0.999:g}])"


def probability_lines(analysis: Analysis) -> list[str]:
    n = analysis.settings.get("n")
    lines = []
    for spec in analysis.objectives():
        good = analysis.at(spec, "w_good", 0.5)
        _, bad = analysis.series(spec, "w_bad")
        b99, b999 = analysis.at(spec, "w_bad", 0.99), analysis.at(spec, "w_bad", 0.999)
        shape = _shape(bad, b99, b999)
        if shape == "zero":
            lines.append(f"{spec}: good-token weight {good:.3g} per token (n = {n}); bad-token weight 0 (no push-down)")
        else:
            lines.append(
                f"{spec}: good-token weight {good:.3g} at p=0.5; bad-token weight {b99:.3g} at p=0.99, "
                f"{b999:.3g} at p=0.999: {shape}"
            )
    return lines


def margin_lines(analysis: Analysis, listed: set[str]) -> list[str]:
    lines = []
    for spec in analysis.objectives():
        good = [analysis.at(spec, "w_good", h) for h in (-50.0, 0.0, 50.0)]
        bad = [analysis.at(spec, "w_bad", h) for h in (-50.0, 0.0, 50.0)]
        same = all(abs(g - b) <= 1e-9 * max(abs(g), 1e-30) for g, b in zip(good, bad, strict=True))
        fades = f"w(+50)/w(0) = {good[2] / good[1]:.2g}" if good[1] else "w(0) = 0"
        kind = "listed" if spec in listed else "β sweep"
        if same:
            values = " / ".join(f"{w:.3g}" for w in good)
            lines.append(f"{spec} ({kind}): w_good = w_bad = {values} at h = -50 / 0 / +50 ({fades})")
        else:
            lines.append(
                f"{spec} ({kind}): w_good {' / '.join(f'{w:.3g}' for w in good)}, w_bad "
                f"{' / '.join(f'{w:.3g}' for w in bad)} at h = -50 / 0 / +50"
            )
    return lines


def logit_lines(analysis: Analysis, weights: Analysis) -> list[str]:
    share = analysis.settings["share_of_rest"]
    assert isinstance(share, dict)
    lines = []
    tails: dict[str, float] = {}
    for spec in analysis.objectives():
        w = weights.at(spec, "w_bad", 0.99)
        if w <= EXACT:
            continue
        target, tail = analysis.at(spec, "down/target", 0.99), analysis.at(spec, "down/tail", 0.99)
        tails[spec] = analysis.at(spec, "down/tail", 0.999)
        most = max(analysis.series(spec, "down/target")[1])
        lines.append(
            f"{spec}: push-down at p=0.99 has weight {w:.3g} but moves the target logit by w(1-p) = {target:.3g} "
            f"(at most {most:.3g} over p); {tail:.3g} of it ({share['tail']:.0%}) lands on the "
            f"{analysis.settings['tail_tokens']:,} tail tokens"
        )
    if len(tails) >= 2:
        big, small = max(tails, key=tails.__getitem__), min(tails, key=tails.__getitem__)
        if tails[small] > 0:
            lines.append(
                f"at p=0.999 {big} moves {tails[big] / tails[small]:.3g}× more logit mass onto the tail than {small}"
            )
    return lines


def similarity_lines(analysis: Analysis) -> list[str]:
    lines = []
    for spec in analysis.objectives():
        _, net = analysis.series(spec, "net_per_token")
        _, gross = analysis.series(spec, "gross_per_token")
        if max(abs(v) for v in net) <= EXACT and max(abs(v) for v in gross) <= EXACT:
            lines.append(f"{spec}: no push on shared tokens at all (w_good = w_bad = 0 there)")
        elif max(abs(v) for v in net) <= EXACT:
            lines.append(
                f"{spec}: net weight on shared tokens is 0 at every s: its pushes (up to {max(gross) / 2:.3g} "
                "up and as much down per token) cancel"
            )
        else:
            low, high = min(net), max(net)
            verb = "raised" if low > 0 else "lowered" if high < 0 else "raised or lowered"
            span = f"{low:.3g}" if abs(high - low) <= 1e-3 * abs(high) else f"{low:.3g} to {high:.3g}"
            lines.append(f"{spec}: net weight per shared token {span}: shared tokens are {verb}, no cancellation")
    return lines


def headline(analyses: dict[str, Analysis], listed: set[str]) -> list[str]:
    """Human-readable lines summarising every analysis, computed from its rows."""
    lines = probability_lines(analyses["weight_vs_probability"])
    lines += margin_lines(analyses["dpo_weight_vs_margin"], listed)
    lines += logit_lines(analyses["logit_space"], analyses["weight_vs_probability"])
    lines += similarity_lines(analyses["literal_similarity"])
    return lines
