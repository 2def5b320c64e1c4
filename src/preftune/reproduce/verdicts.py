"""Intervals and verdict rules of a reproduction: every verdict is computed from the numbers.

A *contrast* is a difference of two groups' scores, estimated with a 95% interval. A claim is a list
of checks, each of which passes or fails by an explicit rule on a contrast; the claim's verdict is
:func:`aggregate` of the checks:

- **holds**: every check passes;
- **partly**: some pass, some do not;
- **does not hold here**: none passes;
- **cannot be tested here**: no check could be decided (the evaluator it needs is at chance:
  :mod:`preftune.reproduce.rules`);
- **inconclusive**: the evaluator works but the numbers do not decide: for a rule that asks whether *some*
  setting of a grid supports a claim (P4 (c): some budget δ), when none does and not every one goes against it
  (:func:`preftune.reproduce.rules.bcr_verdict`); for a head-to-head win rate whose interval contains 0.5 under
  a gold evaluator above chance (P4 (d): :func:`preftune.reproduce.rules.pipeline_verdict`).

Two rules on a contrast with a margin δ > 0 (in the score's own units):

- :func:`clearly_above`: the whole interval lies above +δ (the first group is better, by more than δ);
- :func:`within_margin`: the whole interval lies inside [-δ, +δ] (the groups are alike to within δ).

An interval that cannot be computed (one seed) passes neither rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from preftune.lab.bandit import mean_ci

HOLDS = "holds"
PARTLY = "partly"
DOES_NOT_HOLD = "does not hold here"
NOT_RUN = "not run"
UNTESTABLE = "cannot be tested here"
INCONCLUSIVE = "inconclusive"
VERDICTS = (HOLDS, PARTLY, DOES_NOT_HOLD, NOT_RUN, UNTESTABLE, INCONCLUSIVE)


@dataclass(frozen=True)
class Interval:
    """An estimate with its 95% interval [low, high] (NaN bounds when it cannot be computed)."""

    estimate: float
    low: float
    high: float

    @property
    def known(self) -> bool:
        """Whether both bounds are finite."""
        return math.isfinite(self.low) and math.isfinite(self.high)

    def text(self, digits: int = 3) -> str:
        """``0.123 [0.100, 0.146]``, or ``0.123 [n/a]`` without an interval."""
        if not self.known:
            return f"{self.estimate:.{digits}f} [n/a]"
        return f"{self.estimate:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, float | None]:
        """Plain numbers, NaN as ``None``."""
        values = {"estimate": self.estimate, "low": self.low, "high": self.high}
        return {k: (v if math.isfinite(v) else None) for k, v in values.items()}


def mean_interval(values: Sequence[float] | torch.Tensor) -> Interval:
    """Mean of i.i.d. values with its 95% Student-t interval (NaN bounds for fewer than two values)."""
    tensor = torch.as_tensor(values, dtype=torch.float64).flatten()
    mean, half = mean_ci(tensor)
    return Interval(mean, mean - half, mean + half)


def wilson(successes: float, trials: int) -> Interval:
    """A proportion successes/trials with its 95% Wilson score interval (NaN for no trials); ties counted as
    half a success make ``successes`` fractional."""
    if trials <= 0:
        return Interval(math.nan, math.nan, math.nan)
    z = 1.959964
    p = successes / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def clearly_above(contrast: Interval, margin: float) -> bool:
    """The whole 95% interval lies above +``margin``: the first group is better by more than the margin."""
    return contrast.known and contrast.low > margin


def within_margin(contrast: Interval, margin: float) -> bool:
    """The whole 95% interval lies inside [-``margin``, +``margin``]: the groups are alike to within the margin."""
    return contrast.known and -margin <= contrast.low and contrast.high <= margin


def aggregate(passed: Sequence[bool]) -> str:
    """A claim's verdict: every check passes -> holds, some -> partly, none (or no checks) -> does not hold here."""
    if passed and all(passed):
        return HOLDS
    return PARTLY if any(passed) else DOES_NOT_HOLD
