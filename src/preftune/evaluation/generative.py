"""Generative evaluation: win rate against a baseline, and its length-controlled form (METHODS.md §6).

    >>> scores = win_scores(make_judge("longer"), prompts, outputs, baselines)   # 1 / 0.5 / 0 / NaN
    >>> raw = win_rate(scores, lengths, baseline_lengths)                        # ties count half
    >>> lc = length_controlled_win_rate(scores, lengths, baseline_lengths)

Every rate is a fraction in [0, 1] (AlpacaEval reports the same numbers ×100).

Win scores: each prompt's output against the baseline's, the judge asked in both orders through
:class:`~preftune.judging.base.BothOrders` (disagreement = tie). 1.0: the model wins, 0.0: the
baseline wins, 0.5: a tie, NaN: a failed comparison, left out of every rate and counted.

Length-controlled win rate: AlpacaEval 2's GLM in its ``length_controlled_minimal`` form
(``alpaca_eval/metrics/glm_winrate.py``; Dubois et al., 2024), without the per-instruction
difficulty term, which comes from a hub download. The same model, fitted the same way:

- the preference y ∈ [0, 1] (model wins = 1, ties 0.5) is regressed on two columns and no
  intercept: ``tanh(Δ / std(Δ))`` and a column of ones (θ_m), where Δ = baseline length − model
  length in characters and std is the sample standard deviation (ddof 1) over every prompt,
  failed ones included (AlpacaEval computes it before dropping unannotated rows);
- soft labels: each prompt enters twice, as class 1 with weight y and class 0 with weight 1 − y;
- scikit-learn's ``LogisticRegressionCV``: L1 penalty on both coefficients, liblinear, no
  intercept, random_state 123, the default ten C values ``logspace(-4, 4, 10)``, ``GroupKFold``
  over prompts (both copies of a prompt in one fold; 5 folds, fewer when there are fewer
  prompts), scored by the soft-label log loss, refitted on every prompt with the best C;
- the win probability predicted with the length term at 0 (Δ = 0), averaged over prompts: in
  the minimal form every prompt predicts the same σ(θ_m).

**[our choice]** where AlpacaEval would fail: Δ with zero (or undefined) spread gives a length
column of zeros, not a division by zero; fewer than two usable prompts give NaN.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from preftune.judging.base import BothOrders, PairwiseJudge, Verdict

if TYPE_CHECKING:
    from preftune.judging.store import VerdictStore

CS = tuple(float(c) for c in np.logspace(-4, 4, 10))  # LogisticRegressionCV's default grid
N_SPLITS = 5
RANDOM_STATE = 123

_SCORE = {Verdict.A: 1.0, Verdict.B: 0.0, Verdict.TIE: 0.5, Verdict.FAILED: math.nan}


def win_scores(
    judge: PairwiseJudge,
    prompts: Sequence[str],
    outputs: Sequence[str],
    baselines: Sequence[str],
    store: VerdictStore | None = None,
) -> list[float]:
    """Each prompt's score of the model's output against the baseline's (METHODS.md §6).

    1.0 the model wins, 0.0 the baseline wins, 0.5 a tie (including the judge disagreeing with
    itself across the two orders), NaN a failed comparison.
    """
    if not len(prompts) == len(outputs) == len(baselines):
        raise ValueError(f"{len(prompts)} prompts, {len(outputs)} outputs, {len(baselines)} baselines")
    verdicts = BothOrders(judge, store).compare_many(list(zip(prompts, outputs, baselines, strict=True)))
    return [_SCORE[v] for v in verdicts]


@dataclass(frozen=True)
class WinRate:
    """A win rate (a fraction; ties half) with its bootstrap interval and counts."""

    win_rate: float
    ci_low: float
    ci_high: float
    n: int  # comparisons in the rate (failed ones left out)
    wins: int
    ties: int
    losses: int
    failed: int
    mean_length: float  # characters, over every prompt
    baseline_mean_length: float


@dataclass(frozen=True)
class LengthControlledWinRate:
    """AlpacaEval 2's length-controlled win rate (a fraction), its bootstrap interval and the fit."""

    win_rate: float
    ci_low: float
    ci_high: float
    n: int  # comparisons fitted (failed ones left out)
    coef_length: float  # θ_len on tanh(Δ/std(Δ)), Δ = baseline − model length
    coef_model: float  # θ_m; the length-controlled rate is σ(θ_m)
    C: float  # the inverse L1 strength cross-validation chose


def _check(scores: Sequence[float], lengths: Sequence[int], baseline_lengths: Sequence[int]) -> np.ndarray:
    if not len(scores) == len(lengths) == len(baseline_lengths):
        raise ValueError(f"{len(scores)} scores, {len(lengths)} lengths, {len(baseline_lengths)} baseline lengths")
    y = np.asarray(scores, dtype=float)
    bad = ~np.isnan(y) & ((y < 0) | (y > 1))
    if bad.any():
        raise ValueError(f"scores must lie in [0, 1] or be NaN, not {y[bad][0]}")
    return y


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if not values.size:
        return math.nan, math.nan
    tail = (1 - level) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return float(low), float(high)


def win_rate(
    scores: Sequence[float],
    lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> WinRate:
    """The mean of the non-NaN scores, with a percentile bootstrap interval over prompts (METHODS.md §6).

    The interval resamples the compared prompts ``bootstrap`` times with a NumPy generator seeded
    by ``seed`` (the same inputs give the same interval). NaN rate and interval when nothing was
    compared.
    """
    y = _check(scores, lengths, baseline_lengths)
    kept = y[~np.isnan(y)]
    rate, low, high = math.nan, math.nan, math.nan
    if kept.size:
        rate = float(kept.mean())
        rng = np.random.default_rng(seed)
        means = kept[rng.integers(0, kept.size, size=(bootstrap, kept.size))].mean(axis=1) if bootstrap else kept[:0]
        low, high = _interval(means, level) if bootstrap else (math.nan, math.nan)
    return WinRate(
        win_rate=rate,
        ci_low=low,
        ci_high=high,
        n=int(kept.size),
        wins=int((kept == 1).sum()),
        ties=int(((kept > 0) & (kept < 1)).sum()),
        losses=int((kept == 0).sum()),
        failed=int(np.isnan(y).sum()),
        mean_length=float(np.mean(lengths)) if len(lengths) else math.nan,
        baseline_mean_length=float(np.mean(baseline_lengths)) if len(baseline_lengths) else math.nan,
    )


def length_feature(lengths: Sequence[int] | np.ndarray, baseline_lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    """AlpacaEval's length column ``tanh(Δ / std(Δ))``, Δ = baseline − model length, std with ddof 1.

    Zeros when Δ has no spread (all equal, or a single prompt) **[our choice]**.
    """
    delta = np.asarray(baseline_lengths, dtype=float) - np.asarray(lengths, dtype=float)
    spread = float(np.std(delta, ddof=1)) if delta.size > 1 else 0.0
    if not spread > 0:
        return np.zeros_like(delta)
    return np.tanh(delta / spread)


def fit_glm(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, Cs: Sequence[float] = CS, *, quiet: bool = False
) -> tuple[float, float, float]:
    """``(θ_len, θ_m, C)``: AlpacaEval's cross-validated L1 logistic GLM of soft labels ``y`` on ``[x, 1]``.

    ``fit_LogisticRegressionCV(..., is_ytrue_proba=True)`` in AlpacaEval's ``glm_winrate.py``: rows
    doubled (class 1 weighted y, class 0 weighted 1 − y), GroupKFold by ``groups``, soft log loss.
    With a single C, that C is used (cross-validation then only scores it). ``quiet`` silences
    liblinear's convergence warnings (bootstrap refits); scikit-learn's API notices are always silenced.
    """
    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.metrics import log_loss, make_scorer
    from sklearn.model_selection import GroupKFold

    n = len(y)
    design = np.column_stack([x, np.ones(n)])
    features = np.concatenate([design, design])
    labels = np.concatenate([np.ones(n, dtype=int), np.zeros(n, dtype=int)])
    weights = np.concatenate([y, 1 - y])
    # the weighted log loss of a fold's doubled rows, normalised by its weight (= its prompts),
    # is AlpacaEval's logloss_continuous: the mean soft-label cross-entropy of the fold's prompts
    penalty = {"l1_ratios": (1.0,)} if _sklearn_at_least(1, 8) else {"penalty": "l1"}
    with sklearn.config_context(enable_metadata_routing=True), warnings.catch_warnings(), _liblinear_silenced():
        warnings.simplefilter("ignore", FutureWarning)
        if quiet:
            warnings.simplefilter("ignore", ConvergenceWarning)
        scorer = make_scorer(log_loss, response_method="predict_proba", greater_is_better=False)
        model = LogisticRegressionCV(
            Cs=list(Cs),
            cv=GroupKFold(n_splits=min(N_SPLITS, len(np.unique(groups)))),
            scoring=scorer.set_score_request(sample_weight=True),
            solver="liblinear",
            fit_intercept=False,
            dual=False,
            random_state=RANDOM_STATE,
            **penalty,
        )
        model.set_fit_request(sample_weight=True)
        model.fit(features, labels, sample_weight=weights, groups=np.concatenate([groups, groups]))
    theta_len, theta_m = (float(v) for v in model.coef_[0])
    return theta_len, theta_m, float(np.ravel(model.C_)[0])


@contextlib.contextmanager
def _liblinear_silenced() -> Iterator[None]:
    """Silence liblinear's C-level "class label … specified in weight is not found" lines.

    They come from a fold whose prompts are all wins (or all losses): the other class's copies
    have weight 0 and scikit-learn drops them, which changes nothing in the fit. liblinear writes
    them to file descriptor 2 directly, so the descriptor is pointed at /dev/null meanwhile.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor 2
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _sklearn_at_least(major: int, minor: int) -> bool:
    import sklearn

    found = tuple(int(part) for part in sklearn.__version__.split(".")[:2] if part.isdigit())
    return found >= (major, minor)


def _lc_fit(
    y: np.ndarray, lengths: np.ndarray, baseline_lengths: np.ndarray, groups: np.ndarray, quiet: bool = False
) -> tuple[float, float, float, float]:
    """``(rate, θ_len, θ_m, C)`` on one sample of prompts; NaN when fewer than two prompts were compared."""
    x = length_feature(lengths, baseline_lengths)  # over every prompt, failed ones included (as AlpacaEval)
    kept = ~np.isnan(y)
    if len(np.unique(groups[kept])) < 2:
        return math.nan, math.nan, math.nan, math.nan
    theta_len, theta_m, c = fit_glm(x[kept], y[kept], groups[kept], quiet=quiet)
    return 1 / (1 + math.exp(-theta_m)), theta_len, theta_m, c


def length_controlled_win_rate(
    scores: Sequence[float],
    lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> LengthControlledWinRate:
    """AlpacaEval 2's length-controlled win rate, ``length_controlled_minimal`` (METHODS.md §6).

    The GLM (see the module's docstring) is fitted on the compared prompts and the model's win
    probability predicted at Δ = 0: σ(θ_m). The interval is a percentile bootstrap over prompts
    (``bootstrap`` resamples, NumPy generator seeded by ``seed``; each resample refits the GLM,
    cross-validation included, its std(Δ) recomputed; a prompt drawn twice stays in one fold).
    """
    y = _check(scores, lengths, baseline_lengths)
    lengths_a, baseline_a = np.asarray(lengths, dtype=float), np.asarray(baseline_lengths, dtype=float)
    index = np.arange(len(y))
    rate, theta_len, theta_m, c = _lc_fit(y, lengths_a, baseline_a, index)
    low, high = math.nan, math.nan
    if bootstrap and not math.isnan(rate):
        rng = np.random.default_rng(seed)
        rates = np.empty(bootstrap)
        for b in range(bootstrap):
            pick = rng.integers(0, len(y), size=len(y))
            rates[b] = _lc_fit(y[pick], lengths_a[pick], baseline_a[pick], index[pick], quiet=True)[0]
        low, high = _interval(rates, level)
    return LengthControlledWinRate(rate, low, high, int((~np.isnan(y)).sum()), theta_len, theta_m, c)
