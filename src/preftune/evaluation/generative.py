"""Generative evaluation: win rate against a baseline, and its length-controlled form (docs/methods.md §6).

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
column of zeros, not a division by zero.

**[our choice]** where the rate cannot be estimated, it is not reported as a number: the result's
``reason`` says why (the length feature separates the verdicts; fewer than ``MIN_PROMPTS``
compared prompts; a bootstrap in which too many resamples are separated: the criteria are in
:func:`length_controlled_win_rate`), and its rate and interval are NaN (``null`` in JSON). The
bootstrap refits the same GLM with :mod:`preftune.evaluation.l1_logistic` (the same objective,
folds and C grid, all resamples at once; it agrees with liblinear to liblinear's tolerance).

Coverage of the 95% interval, measured on simulated judges whose verdicts follow the minimal GLM
(P(win) = σ(θ_m + θ_len·tanh(Δ/σ)), Δ ~ N(μ, σ²); seven judges: θ_m from −0.5 to 1.5, θ_len from
0 to −2, ties 0 to 30 %, the model longer on average or not; 60 data sets each, 100 resamples),
over the data sets that criteria 1 and 3 of :func:`length_controlled_win_rate` leave: 0.81 to 0.97
with 20 prompts, 0.90 to 0.98 with 32, 0.88 to 0.95 with 48, each ± about 0.04 (1.00 where
θ_m = 0: the L1 penalty's point mass sits on the truth; ``docs/methods.md`` has the table). The
shortfall is the L1 penalty pulling σ(θ_m) towards 0.5 on few prompts, which the bootstrap
reproduces rather than corrects. Hence ``MIN_PROMPTS`` = 30; ``tests/evaluation/test_generative.py``
checks the coverage on 40 prompts.
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
from preftune.judging.progress import compare_with_progress

if TYPE_CHECKING:
    from preftune.judging.store import VerdictStore

CS = tuple(float(c) for c in np.logspace(-4, 4, 10))  # LogisticRegressionCV's default grid
N_SPLITS = 5
MIN_PROMPTS = 30  # the fewest compared prompts the LC win rate is estimated on (coverage in the module docstring)
_BOOTSTRAP_CHUNK = 50  # resamples refitted together
RANDOM_STATE = 123

_SCORE = {Verdict.A: 1.0, Verdict.B: 0.0, Verdict.TIE: 0.5, Verdict.FAILED: math.nan}


def win_scores(
    judge: PairwiseJudge,
    prompts: Sequence[str],
    outputs: Sequence[str],
    baselines: Sequence[str],
    store: VerdictStore | None = None,
    progress: bool = False,
) -> list[float]:
    """Each prompt's score of the model's output against the baseline's (docs/methods.md §6).

    1.0 the model wins, 0.0 the baseline wins, 0.5 a tie (including the judge disagreeing with
    itself across the two orders), NaN a failed comparison. ``progress``: a bar with ETA over the
    comparisons on stderr (:mod:`preftune.judging.progress`).
    """
    if not len(prompts) == len(outputs) == len(baselines):
        raise ValueError(f"{len(prompts)} prompts, {len(outputs)} outputs, {len(baselines)} baselines")
    items = list(zip(prompts, outputs, baselines, strict=True))
    verdicts = compare_with_progress(BothOrders(judge, store), items, enabled=progress, description="win rate")
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
    """AlpacaEval 2's length-controlled win rate (a fraction), its bootstrap interval and the fit.

    ``reason`` is None when the rate can be estimated, else why not (see
    :func:`length_controlled_win_rate`): then ``win_rate``, ``ci_low`` and ``ci_high`` are NaN, and
    the coefficients, where a fit was made, are the penalised fit's: set by the L1 penalty, not by
    the data. ``separated_resamples``: the fraction of bootstrap resamples whose verdicts the length
    feature separates (NaN without a bootstrap).
    """

    win_rate: float
    ci_low: float
    ci_high: float
    n: int  # comparisons fitted (failed ones left out)
    coef_length: float  # θ_len on tanh(Δ/std(Δ)), Δ = baseline − model length
    coef_model: float  # θ_m; the length-controlled rate is σ(θ_m)
    C: float  # the inverse L1 strength cross-validation chose
    reason: str | None = None  # why the rate cannot be estimated; None when it can
    separated_resamples: float = math.nan

    @property
    def estimable(self) -> bool:
        return self.reason is None

    def describe(self) -> str:
        """``0.612 [0.540, 0.690]`` (``0.612`` without an interval), or ``cannot be estimated: REASON``."""
        if self.reason is not None:
            return f"cannot be estimated: {self.reason}"
        if math.isnan(self.ci_low):
            return f"{self.win_rate:.3f}"
        return f"{self.win_rate:.3f} [{self.ci_low:.3f}, {self.ci_high:.3f}]"


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
    """The mean of the non-NaN scores, with a percentile bootstrap interval over prompts (docs/methods.md §6).

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
    from sklearn.metrics import make_scorer
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
        scorer = make_scorer(_log_loss, response_method="predict_proba", greater_is_better=False)
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


def _log_loss(y_true: np.ndarray, y_proba: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """scikit-learn's ``log_loss`` for labels 0/1 and the probabilities of 1, without its input checks
    (four fifths of a cross-validated fit's time): probabilities of each row's label clipped to
    [ε, 1 − ε], −log averaged with ``sample_weight``."""
    p = np.asarray(y_proba, dtype=float)
    eps = float(np.finfo(p.dtype).eps)
    picked = np.where(np.asarray(y_true) == 1, np.clip(p, eps, 1 - eps), np.clip(1 - p, eps, 1 - eps))
    return float(np.average(-np.log(picked), weights=sample_weight))


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


def _unestimable(x: np.ndarray, y: np.ndarray) -> str | None:
    """Why the GLM cannot be fitted to these verdicts (criteria 1 and 2 of
    :func:`length_controlled_win_rate`), or None. Separation is named first: more prompts judged
    the same way would not cure it."""
    from preftune.evaluation.l1_logistic import separated

    kept = ~np.isnan(y)
    n = int(kept.sum())
    too_few = f"too few prompts: {n} compared, at least {MIN_PROMPTS} needed"
    if n < 2:
        return too_few
    xs, ys = x[kept], y[kept]
    if separated(xs, ys, np.ones(n))[0]:
        if (ys == 1).all() or (ys == 0).all():
            side = "wins" if ys[0] == 1 else "losses"
            return f"all {n} compared prompts are {side}: no verdict the other way to weigh length against"
        side = "shorter" if xs[ys < 1].max() <= xs[ys > 0].min() else "longer"  # x grows as the answer shortens
        return (
            f"length separates the verdicts (every win's answer is {side}, relative to the baseline's, "
            "than every loss's): the GLM has no finite fit"
        )
    return too_few if n < MIN_PROMPTS else None


def _bootstrap_rates(
    y: np.ndarray, lengths: np.ndarray, baseline_lengths: np.ndarray, bootstrap: int, seed: int
) -> tuple[np.ndarray, float]:
    """The GLM refitted on ``bootstrap`` resamples of the prompts, and the fraction of resamples whose
    verdicts the length feature separates (or that hold fewer than two compared prompts).

    Each resample draws len(y) prompts with replacement (NumPy generator seeded by ``seed``),
    recomputes std(Δ) over them, failed ones included, and refits with cross-validation (a prompt
    drawn twice stays in one fold), by :mod:`preftune.evaluation.l1_logistic`.
    """
    from preftune.evaluation.l1_logistic import cv_fit, separated

    rng = np.random.default_rng(seed)
    n, delta, compared = len(y), baseline_lengths - lengths, ~np.isnan(y)
    rates, split = np.full(bootstrap, math.nan), np.zeros(bootstrap, dtype=bool)
    for start in range(0, bootstrap, _BOOTSTRAP_CHUNK):
        picks = rng.integers(0, n, size=(min(_BOOTSTRAP_CHUNK, bootstrap - start), n))
        spread = np.std(delta[picks], axis=1, ddof=1)
        x = np.tanh(delta[None, :] / np.where(spread > 0, spread, np.inf)[:, None])  # no spread: zeros
        m = np.stack([np.bincount(p, minlength=n) for p in picks]).astype(float) * compared
        usable = (m > 0).sum(1) >= 2
        chunk = slice(start, start + len(picks))
        if usable.any():
            theta, _ = cv_fit(x[usable], y, m[usable], CS, N_SPLITS)
            rates[chunk][usable] = 1 / (1 + np.exp(-theta[:, 1]))
        split[chunk] = separated(x, y, m) | ~usable
    return rates, float(split.mean())


def length_controlled_win_rate(
    scores: Sequence[float],
    lengths: Sequence[int],
    baseline_lengths: Sequence[int],
    *,
    bootstrap: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> LengthControlledWinRate:
    """AlpacaEval 2's length-controlled win rate, ``length_controlled_minimal`` (docs/methods.md §6), where
    it can be estimated.

    The GLM (see the module's docstring) is fitted on the compared prompts and the model's win
    probability predicted at Δ = 0: σ(θ_m). The interval is a percentile bootstrap over prompts
    (``bootstrap`` resamples, seeded by ``seed``; see :func:`_bootstrap_rates`).

    The rate is reported as not estimable (NaN, with ``reason``) when:

    1. the length feature separates the verdicts, completely or quasi-completely (Albert & Anderson,
       1984: every win on one side of a length threshold, every loss on the other, ties only at it;
       or all verdicts one way; :func:`~preftune.evaluation.l1_logistic.separated`): the likelihood
       has no finite maximum, so σ(θ_m) is set by the L1 penalty and the C that cross-validation
       picked, not by the data. A judge that length explains, such as ``longer``, always is;
    2. fewer than ``MIN_PROMPTS`` prompts were compared (the coverage in the module's docstring);
    3. with a bootstrap, more than (1 − level)/2 of the resamples are separated so: more than one
       tail's worth of the bootstrap distribution is penalty-set fits, so an end of the percentile
       interval can be one of them (as in an interval like [0.500, 0.996] around an estimate at
       its edge).

    Without a bootstrap (``bootstrap=0``) the rate has no interval and only 1 and 2 apply.
    """
    y = _check(scores, lengths, baseline_lengths)
    lengths_a, baseline_a = np.asarray(lengths, dtype=float), np.asarray(baseline_lengths, dtype=float)
    x = length_feature(lengths_a, baseline_a)  # over every prompt, failed ones included (as AlpacaEval)
    kept = ~np.isnan(y)
    reason = _unestimable(x, y)
    theta_len, theta_m, c = math.nan, math.nan, math.nan
    if kept.sum() >= 2:
        theta_len, theta_m, c = fit_glm(x[kept], y[kept], np.flatnonzero(kept), quiet=reason is not None)
    low, high, share = math.nan, math.nan, math.nan
    if bootstrap and reason is None:
        rates, share = _bootstrap_rates(y, lengths_a, baseline_a, bootstrap, seed)
        if share > (1 - level) / 2:
            reason = (
                f"length separates the verdicts in {share:.0%} of {bootstrap} bootstrap resamples, more "
                f"than the {(1 - level) / 2:.1%} in each tail of a {level:.0%} interval"
            )
        else:
            low, high = _interval(rates, level)
    rate = 1 / (1 + math.exp(-theta_m)) if reason is None else math.nan
    return LengthControlledWinRate(rate, low, high, int(kept.sum()), theta_len, theta_m, c, reason, share)
