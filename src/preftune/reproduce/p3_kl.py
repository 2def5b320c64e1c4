"""P3's forward vs reverse KL claim, measured on :mod:`preftune.lab.kl_toy`'s four categories.

The toy is deterministic (exact gradients, no sampling), so its numbers carry no sampling error and
no interval: a check passes or fails exactly. It is run with plain gradient descent
(:func:`preftune.lab.kl_toy.descend`) and with Adam, at several step sizes, to show whether the
outcome depends on the optimiser or the step size.

Checks, for every optimiser × step size (the claim as docs/methods.md §7 states it):

1. reverse KL(p‖q) brings the target's mode (category 2) to mass ≥ ``LEVEL`` in fewer steps than
   forward KL(q‖p) (a run that never gets there counts as infinitely slow; a tie fails);
2. forward KL raises category 0 above its starting mass at some step (mode covering).

The verdict is :func:`preftune.reproduce.verdicts.aggregate` of all the checks.

**Also measured, outside the verdict [our choice]:** the same sweep towards a target that nearly
excludes a category, ``EXCLUDING_Q`` (category 1 at 0.001), counting the steps until that
category's mass falls to ``DROP``. This is where the mode-seeking intuition of P3 (mass moved off
the bins the target rules out, fast) shows on this toy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from preftune.lab.kl_toy import KLToyConfig, descend, first_step_at, forward_kl, reverse_kl
from preftune.reproduce.report import ClaimSection, markdown_table
from preftune.reproduce.verdicts import aggregate

LEVEL = 0.5
MODE, COVERED = 2, 0  # the target's mode; the category that mode covering should raise
EXCLUDING_Q = (0.2, 0.001, 0.6, 0.199)  # docs/methods.md §7's q with category 1 nearly ruled out
EXCLUDED, DROP = 1, 0.05

KL_CLAIM = (
    "Reverse KL, the divergence that on-policy RL and negative-gradient objectives minimise, is mode "
    "seeking: it reallocates probability mass onto the target's dominant category quickly. Forward KL, "
    "the divergence of maximum likelihood on offline data, is mode covering: it spreads mass over every "
    "category the target supports (raising category 0 along the way) and moves mass to the mode more slowly."
)


@dataclass(frozen=True)
class KLRun:
    """Masses ``[steps+1, V]`` under forward and reverse KL with one optimiser and step size."""

    optimiser: str
    lr: float
    forward: Tensor
    reverse: Tensor


def adam_descend(divergence: str, config: KLToyConfig, lr: float) -> Tensor:
    """``[steps+1, V]`` p after each Adam step (default betas) on ``divergence``, logits from log p0."""
    loss_fn = {"forward": forward_kl, "reverse": reverse_kl}[divergence]
    q = torch.tensor(config.q, dtype=torch.float64)
    logits = torch.tensor(config.p0, dtype=torch.float64).log().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    masses = [torch.softmax(logits.detach(), -1)]
    for _ in range(config.steps):
        optimiser.zero_grad()
        loss_fn(logits, q).backward()
        optimiser.step()
        masses.append(torch.softmax(logits.detach(), -1))
    return torch.stack(masses)


def run_kl_sweep(
    steps: int, sgd_lrs: tuple[float, ...], adam_lrs: tuple[float, ...], q: tuple[float, ...] = KLToyConfig().q
) -> list[KLRun]:
    """The toy from P3's p0 towards ``q`` (docs/methods.md's by default) with gradient descent at ``sgd_lrs`` and
    Adam at ``adam_lrs``."""
    runs = []
    for lr in sgd_lrs:
        config = KLToyConfig(steps=steps, lr=lr, q=q)
        runs.append(KLRun("gradient descent", lr, descend("forward", config), descend("reverse", config)))
    for lr in adam_lrs:
        config = KLToyConfig(steps=steps, q=q)
        runs.append(KLRun("Adam", lr, adam_descend("forward", config, lr), adam_descend("reverse", config, lr)))
    return runs


def _steps(masses: Tensor) -> float:
    """First step with the mode's mass ≥ LEVEL; ∞ if never."""
    step = first_step_at(masses, MODE, LEVEL)
    return math.inf if step is None else float(step)


def run_checks(run: KLRun) -> dict[str, object]:
    """The numbers and the two checks (module docstring) of one run."""
    start = float(run.forward[0, COVERED])
    early = max(1, (run.forward.shape[0] - 1) // 10)
    forward_steps, reverse_steps = _steps(run.forward), _steps(run.reverse)
    forward_rise = float(run.forward[:, COVERED].max()) - start
    reverse_rise = float(run.reverse[:, COVERED].max()) - start
    return {
        "optimiser": run.optimiser,
        "lr": run.lr,
        "early_step": early,
        "forward_steps_to_level": forward_steps,
        "reverse_steps_to_level": reverse_steps,
        "forward_mode_mass_early": float(run.forward[early, MODE]),
        "reverse_mode_mass_early": float(run.reverse[early, MODE]),
        "forward_category0_rise": forward_rise,
        "reverse_category0_rise": reverse_rise,
        "reverse_faster": reverse_steps < forward_steps,
        "forward_raises_category0": forward_rise > 1e-9,
    }


def _fmt_steps(value: float) -> str:
    return "never" if math.isinf(value) else f"{value:.0f}"


WHY = (
    "Why, from the gradients on the logits z: forward KL's is p − q, so category 2 (p₂ = 0.1 against q₂ = 0.6) "
    "gets the largest push at once; reverse KL's is p_i·(log(p_i/q_i) − KL(p‖q)), scaled by p_i, so the mode, "
    "having little mass, is pushed weakly at first, while category 0 (log(0.3/0.2) < KL(p0‖q) ≈ 0.60) is pushed up."
)


def _reason(checks: list[dict[str, object]]) -> str:
    """The checks' counts in words, and a plain statement when the toy says the opposite of the claim."""
    n = len(checks)
    faster = sum(bool(c["reverse_faster"]) for c in checks)
    forward_first = sum(c["forward_steps_to_level"] < c["reverse_steps_to_level"] for c in checks)  # type: ignore[operator]
    raised = sum(bool(c["forward_raises_category0"]) for c in checks)
    reverse_raised = sum(float(c["reverse_category0_rise"]) > 1e-9 for c in checks)  # type: ignore[arg-type]
    text = (
        f"Reverse KL reached p₂ ≥ {LEVEL:g} first in {faster} of {n} runs, forward KL first in {forward_first}; "
        f"forward KL raised category 0 in {raised} of {n} runs, reverse KL in {reverse_raised} of {n}."
    )
    if n and forward_first == n and reverse_raised == n and raised == 0:
        text += (
            " Here the claim as stated is reversed: with exact gradients, forward KL moves mass to the mode faster, "
            "and it is reverse KL, not forward KL, that raises category 0."
        )
    return text


def _drop_steps(masses: Tensor) -> float:
    """First step with the excluded category's mass ≤ DROP; ∞ if never."""
    hit = (masses[:, EXCLUDED] <= DROP).nonzero()
    return float(hit[0]) if len(hit) else math.inf


def exclusion_table(runs: list[KLRun]) -> tuple[str, list[dict[str, Any]]]:
    """Steps until category 1's mass falls to DROP under each divergence (∞: never), per optimiser × step size."""
    rows = [
        {
            "optimiser": r.optimiser,
            "lr": r.lr,
            "forward_steps": _drop_steps(r.forward),
            "reverse_steps": _drop_steps(r.reverse),
        }
        for r in runs
    ]
    header = ["optimiser", "lr", f"forward: steps to p₁ ≤ {DROP:g}", f"reverse: steps to p₁ ≤ {DROP:g}", "sooner"]
    cells = []
    for row in rows:
        forward, reverse = row["forward_steps"], row["reverse_steps"]
        sooner = "reverse" if reverse < forward else ("forward" if forward < reverse else "tie")
        cells.append((row["optimiser"], f"{row['lr']:g}", _fmt_steps(forward), _fmt_steps(reverse), sooner))
    return markdown_table(header, cells), rows


def _exclusion_text(runs: list[KLRun]) -> tuple[str, list[dict[str, Any]]]:
    table, rows = exclusion_table(runs)
    sooner = sum(row["reverse_steps"] < row["forward_steps"] for row in rows)
    text = (
        f"**Also measured (not part of the verdict).** The same sweep towards q′ = {list(EXCLUDING_Q)}, a target "
        f"that nearly rules out category 1: steps until p₁ falls to {DROP:g}. Reverse KL emptied that category "
        f"sooner in {sooner} of {len(runs)} runs. Its push on a category grows with log(p_i/q_i), while forward "
        "KL's is at most p_i − q_i: mode seeking as P3 means it, mass moved quickly off the bins the target rules "
        "out, which is what a negative gradient does."
    )
    return "\n\n".join([text, table]), rows


def kl_section(runs: list[KLRun], figures: tuple[str, ...], excluding: list[KLRun] | None = None) -> ClaimSection:
    """The forward vs reverse KL claim, checked on every run of the sweep; ``excluding``: the same sweep towards
    :data:`EXCLUDING_Q`, reported beside the verdict."""
    checks = [run_checks(run) for run in runs]
    rows = [
        (
            c["optimiser"],
            f"{c['lr']:g}",
            _fmt_steps(c["forward_steps_to_level"]),
            _fmt_steps(c["reverse_steps_to_level"]),
            f"{c['forward_mode_mass_early']:.3f} / {c['reverse_mode_mass_early']:.3f} (step {c['early_step']})",
            f"{c['forward_category0_rise']:+.3f} / {c['reverse_category0_rise']:+.3f}",
            "pass" if c["reverse_faster"] else "fail",
            "pass" if c["forward_raises_category0"] else "fail",
        )
        for c in checks
    ]
    header = [
        "optimiser",
        "lr",
        f"forward: steps to p₂ ≥ {LEVEL:g}",
        f"reverse: steps to p₂ ≥ {LEVEL:g}",
        "p₂ early, forward / reverse",
        "max rise of p₀, forward / reverse",
        "check 1: reverse sooner",
        "check 2: forward raises p₀",
    ]
    passed = [bool(c[k]) for c in checks for k in ("reverse_faster", "forward_raises_category0")]
    first = runs[0]
    setup = (
        f"p0 = {list(KLToyConfig().p0)}, q = {list(KLToyConfig().q)}, logits start at log p0; "
        f"{first.forward.shape[0] - 1} steps per run. Exact gradients and no sampling: the numbers are "
        "deterministic, so they carry no interval."
    )
    reason = _reason(checks)
    parts = [setup, markdown_table(header, rows), WHY]
    data: dict[str, object] = {
        "level": LEVEL,
        "runs": checks,  # ∞ (never) becomes null in results.json (strict_json)
    }
    if excluding:
        text, excluded_rows = _exclusion_text(excluding)
        parts.append(text)
        data["excluding"] = {"q": list(EXCLUDING_Q), "drop": DROP, "runs": excluded_rows}
    measured = "\n\n".join(parts)
    title = "Forward vs reverse KL: reverse KL moves mass to the mode faster"
    return ClaimSection("kl", title, KL_CLAIM, measured, aggregate(passed), reason, figures, data)
