"""Generative evaluation: win rate, AlpacaEval 2's length-controlled win rate, ``preftune win-rate``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import minimize

from preftune.cli.main import main
from preftune.evaluation.generative import (
    CS,
    MIN_PROMPTS,
    fit_glm,
    length_controlled_win_rate,
    length_feature,
    win_rate,
    win_scores,
)
from preftune.evaluation.l1_logistic import cv_fit, group_folds, separated
from preftune.files import strict_json
from preftune.judging.base import FAILED
from preftune.judging.functions import FunctionJudge
from preftune.judging.specs import make_judge


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


# model longer on 40 prompts, shorter on 10 (baseline always 150 characters)
LONGER, SHORTER, BASE = [200] * 40, [100] * 10, [150] * 50


def _case(wins_when_longer: int, wins_when_shorter: int) -> list[float]:
    return (
        [1.0] * wins_when_longer
        + [0.0] * (40 - wins_when_longer)
        + [1.0] * wins_when_shorter
        + [0.0] * (10 - wins_when_shorter)
    )


def _penalised_fit(scores: list[float], lengths: list[int], base: list[int], c: float) -> float:
    """σ(θ_m) from a direct Nelder–Mead minimisation of liblinear's L1 objective at ``c`` (independent of sklearn):
    ‖θ‖₁ + C Σ_i [y_i·softplus(−z_i) + (1 − y_i)·softplus(z_i)], z_i = θ_len·x_i + θ_m."""
    y = np.asarray(scores)
    x = length_feature(lengths, base)

    def objective(theta: np.ndarray) -> float:
        z = theta[0] * x + theta[1]
        return float(np.abs(theta).sum() + c * np.sum(y * np.logaddexp(0, -z) + (1 - y) * np.logaddexp(0, z)))

    found = minimize(objective, np.array([-1.0, 0.5]), method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12})
    return _sigmoid(found.x[1])


# --- win rate -------------------------------------------------------------------------------------------------


def test_win_rate_counts_ties_half_and_leaves_failed_out() -> None:
    scores = [1.0, 1.0, 1.0, 0.5, 0.0, math.nan]
    result = win_rate(scores, [10, 20, 30, 40, 50, 60], [5] * 6, bootstrap=500, seed=3)
    assert result.win_rate == pytest.approx(0.7)  # (3 + 0.5) / 5
    assert (result.n, result.wins, result.ties, result.losses, result.failed) == (5, 3, 1, 1, 1)
    assert result.ci_low <= 0.7 <= result.ci_high
    assert 0.0 <= result.ci_low < result.ci_high <= 1.0
    assert result.mean_length == 35.0 and result.baseline_mean_length == 5.0
    again = win_rate(scores, [10, 20, 30, 40, 50, 60], [5] * 6, bootstrap=500, seed=3)
    assert (again.ci_low, again.ci_high) == (result.ci_low, result.ci_high)


def test_all_wins_have_a_degenerate_interval() -> None:
    result = win_rate([1.0] * 7, [1] * 7, [1] * 7)
    assert (result.win_rate, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)


def test_nothing_compared_is_nan_and_bad_scores_are_refused() -> None:
    assert math.isnan(win_rate([math.nan], [1], [1]).win_rate)
    with pytest.raises(ValueError):
        win_rate([2.0], [1], [1])
    with pytest.raises(ValueError):
        win_rate([1.0], [1, 2], [1])


# --- length-controlled win rate -------------------------------------------------------------------------------


def test_equal_lengths_give_the_penalised_logistic_fit_of_the_mean() -> None:
    # Δ = 0 everywhere: the length column is 0, so only θ_m is fitted. With θ_m > 0 the L1 objective's
    # derivative is C·n·(σ(θ_m) − ȳ) + 1 = 0, so σ(θ_m) = ȳ − 1/(C·n). The 30 prompts are laid out so that
    # every one of GroupKFold's five folds holds 4 wins, 1 tie, 1 loss (mean 0.75): held-out loss falls as C grows,
    # cross-validation picks the largest C, 1e4, and the rate is 0.75 − 1/(1e4·30) = 0.7499967.
    scores = [1.0] * 20 + [0.5] * 5 + [0.0] * 5
    result = length_controlled_win_rate(scores, [100] * 30, [100] * 30, bootstrap=0)
    assert result.C == pytest.approx(1e4)
    assert result.coef_length == 0.0
    assert result.win_rate == pytest.approx(0.75 - 1 / (1e4 * 30), abs=2e-6)
    assert win_rate(scores, [100] * 30, [100] * 30, bootstrap=0).win_rate == pytest.approx(0.75)


@pytest.mark.filterwarnings("ignore:Liblinear failed to converge")  # as in AlpacaEval: θ_len grows with C
def test_winning_only_by_length_is_not_a_win() -> None:
    # Wins on 36 of 40 prompts where the model is longer, 1 of 10 where it is shorter: raw rate 37/50 = 0.74.
    # x = tanh(Δ/std(Δ)) = ∓t, t = tanh(1/sqrt(32/49)) ≈ 0.845. At θ_m = 0 the fitted q on the longer prompts is
    # 1 − q on the shorter ones; θ_len's stationarity gives q_longer − 0.9 = 1/(C·t·n), and θ_m's subgradient
    # condition |C Σ(q − y)| = (40 − 10)/(t·50) ≤ 1 holds (0.6 ≤ t): the L1 optimum has θ_m = 0 exactly, for
    # every C, so the length-controlled rate is σ(0) = 0.5.
    scores = _case(36, 1)
    assert win_rate(scores, LONGER + SHORTER, BASE, bootstrap=0).win_rate == pytest.approx(0.74)
    result = length_controlled_win_rate(scores, LONGER + SHORTER, BASE, bootstrap=0)
    assert result.coef_model == 0.0 and result.win_rate == 0.5
    assert result.coef_length < 0  # the model wins when Δ = baseline − model length is negative


def test_length_controlled_rate_matches_an_independent_fit_and_alpaca_eval() -> None:
    # 36/40 wins when longer, 3/10 when shorter: raw 0.78. Unpenalised, σ(θ_m ∓ θ_len·t) = 0.9 and 0.3 give
    # θ_m = (logit 0.9 + logit 0.3)/2 and a rate σ(θ_m) ≈ 0.6626; the L1 penalty at the chosen C moves it slightly.
    scores = _case(36, 3)
    result = length_controlled_win_rate(scores, LONGER + SHORTER, BASE, bootstrap=0)
    unpenalised = _sigmoid((math.log(0.9 / 0.1) + math.log(0.3 / 0.7)) / 2)
    assert result.win_rate == pytest.approx(unpenalised, abs=5e-3)
    assert any(math.isclose(result.C, c) for c in CS)
    assert result.win_rate == pytest.approx(_penalised_fit(scores, LONGER + SHORTER, BASE, result.C), abs=1e-4)
    # AlpacaEval 0.6.6's own fit_LogisticRegressionCV + make_dmatrix_for_model on this case (the minimal formula,
    # run offline in a separate environment): 0.6612794509889016, θ = (−1.7924963, 0.6690011), C = 21.544
    assert result.win_rate == pytest.approx(0.6612794509889016, abs=1e-6)
    assert (result.coef_length, result.coef_model) == pytest.approx((-1.7924963091806545, 0.6690010923124594), abs=1e-5)


def test_ties_and_failed_comparisons_match_alpaca_eval() -> None:
    rng = np.random.default_rng(1)
    n = 120
    lengths, base = rng.integers(50, 800, n), rng.integers(50, 800, n)
    p = 1 / (1 + np.exp(-(0.3 + (lengths - base) / 300)))
    scores = [float(v) for v in rng.random(n) < p]
    for i in range(0, n, 7):
        scores[i] = 0.5
    for i in range(3, n, 17):
        scores[i] = math.nan
    result = length_controlled_win_rate(scores, lengths.tolist(), base.tolist(), bootstrap=0)
    # AlpacaEval 0.6.6 on the same rows (NaN preferences dropped after std(Δ) is taken over every row)
    assert result.n == 113
    assert result.win_rate == pytest.approx(0.6090505209974443, abs=1e-6)
    assert result.coef_length == pytest.approx(-1.2825613955942214, abs=1e-5)


def test_length_controlled_bootstrap_is_seeded() -> None:
    scores, lengths = _case(30, 5), LONGER + SHORTER
    first = length_controlled_win_rate(scores, lengths, BASE, bootstrap=8, seed=1)
    again = length_controlled_win_rate(scores, lengths, BASE, bootstrap=8, seed=1)
    assert first.estimable and (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert first.ci_low <= first.win_rate <= first.ci_high


# --- when the length-controlled win rate cannot be estimated -----------------------------------------------------


def test_too_few_prompts_cannot_be_estimated_and_say_so() -> None:
    """The last 30 prompts of the case above (16 wins and 4 losses longer, 3 wins and 7 losses shorter) are
    enough; one fewer is not, and a failed comparison does not count."""
    scores, lengths = _case(36, 3)[50 - MIN_PROMPTS :], (LONGER + SHORTER)[50 - MIN_PROMPTS :]
    assert MIN_PROMPTS == 30 and length_controlled_win_rate(scores, lengths, BASE[:30], bootstrap=0).estimable
    for fewer in (scores[1:], [math.nan, *scores[1:]]):
        result = length_controlled_win_rate(fewer, lengths[-len(fewer) :], BASE[: len(fewer)], bootstrap=50)
        assert result.reason == "too few prompts: 29 compared, at least 30 needed"
        assert math.isnan(result.win_rate) and math.isnan(result.ci_low) and result.n == 29
        assert result.describe() == "cannot be estimated: too few prompts: 29 compared, at least 30 needed"
    assert "too few prompts: 1 compared" in length_controlled_win_rate([1.0, math.nan], [3, 4], [1, 1]).reason


def _longer_judge_case(n: int, seed: int = 0) -> tuple[list[float], list[int], list[int]]:
    """``longer``'s own verdicts on n answers of random lengths against a baseline of random lengths."""
    rng = np.random.default_rng(seed)
    model = ["x" * int(k) for k in rng.integers(20, 400, n)]
    base = ["y" * int(k) for k in rng.integers(20, 400, n)]
    scores = win_scores(make_judge("longer"), [f"q{i}" for i in range(n)], model, base)
    return scores, [len(t) for t in model], [len(t) for t in base]


def test_a_judge_that_length_explains_cannot_be_estimated_and_says_why() -> None:
    """``longer`` wins exactly where the answer is longer: the fit separates, whatever the number of prompts."""
    scores, lengths, base = _longer_judge_case(200)
    assert 0 < sum(scores) < 200  # wins and losses: not the all-one-way case
    for bootstrap in (0, 20):
        result = length_controlled_win_rate(scores, lengths, base, bootstrap=bootstrap)
        assert not result.estimable and result.reason is not None
        assert result.reason.startswith("length separates the verdicts (every win's answer is longer")
        assert math.isnan(result.win_rate) and math.isnan(result.ci_low) and math.isnan(result.ci_high)
        assert result.describe() == f"cannot be estimated: {result.reason}"
        report = json.loads(json.dumps(strict_json(vars(result))))
        assert report["win_rate"] is None and report["reason"] == result.reason and report["n"] == 200
    shorter = length_controlled_win_rate([1.0 - s for s in scores], lengths, base)  # the `shorter` judge
    assert shorter.reason.startswith("length separates the verdicts (every win's answer is shorter")
    all_wins = length_controlled_win_rate([1.0] * 40, [5] * 40, list(range(40)))
    assert all_wins.reason is not None and "all 40 compared prompts are wins" in all_wins.reason


def test_a_bootstrap_mostly_of_separated_resamples_cannot_be_estimated() -> None:
    """36/40 wins when longer, 3/10 when shorter: estimable on the data (test above), but a resample
    without the 3 shorter wins (about 1 in 20) is separated, more than the 2.5% a 95% interval's tail holds."""
    result = length_controlled_win_rate(_case(36, 3), LONGER + SHORTER, BASE, bootstrap=200)
    assert result.separated_resamples == pytest.approx(0.06, abs=0.03)
    assert result.reason is not None and "bootstrap resamples, more than the 2.5% in each tail" in result.reason
    assert math.isnan(result.win_rate) and result.coef_model == pytest.approx(0.669, abs=1e-3)  # the fit is kept
    assert length_controlled_win_rate(_case(36, 3), LONGER + SHORTER, BASE, bootstrap=0).estimable


def test_separation_is_complete_quasi_complete_or_one_sided() -> None:
    x = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
    ones = np.ones(5)

    def check(y: list[float]) -> bool:
        return bool(separated(x, np.array(y), ones)[0])

    assert check([1, 1, 0, 0, 0]) and check([0, 0, 1, 1, 1])  # complete, either way
    assert check([1, 1, 0.5, 0, 0]) and check([1, 1, 1, 0.5, 0])  # quasi-complete: the tie at the threshold
    assert check([1, 1, 1, 1, 1]) and check([0, 0, 0, 0, 0])  # one class
    assert not check([1, 0, 1, 0, 0]) and not check([1, 0.5, 1, 0, 0])  # a loss among the wins
    assert not check([0.5] * 5)  # all ties: both classes at every x
    assert not separated(np.zeros(4), np.array([1.0, 0.0, 1.0, 0.0]), np.ones(4))[0]  # no spread in x
    assert check([1, 1, 0, 0, math.nan]) and not check([1, 1, 0, 0, 1])  # a failed (NaN) row is left out
    assert separated(x, np.array([1, 1, 0, 1, 0.0]), np.array([1, 1, 1, 0, 1.0]))[0]  # weight 0 leaves a row out


def test_the_bootstrap_solver_agrees_with_scikit_learn_and_its_folds() -> None:
    """The vectorised refits (l1_logistic) against AlpacaEval's fit (scikit-learn) on random data sets,
    and its fold assignment against GroupKFold's on resampled prompts."""
    from sklearn.model_selection import GroupKFold

    rng = np.random.default_rng(2)
    for n in (12, 40, 90):
        lengths, base = rng.integers(50, 800, n), rng.integers(50, 800, n)
        p = 1 / (1 + np.exp(-(rng.normal() + 2 * rng.normal() * np.tanh((base - lengths) / 300))))
        y = (rng.random(n) < p).astype(float)
        y[rng.random(n) < 0.2] = 0.5
        x = length_feature(lengths, base)
        theta_len, theta_m, _ = fit_glm(x, y, np.arange(n), quiet=True)
        theta, _ = cv_fit(x[None], y, np.ones((1, n)), CS, 5)
        assert theta[0] == pytest.approx([theta_len, theta_m], abs=2e-3)
        assert 1 / (1 + math.exp(-theta[0, 1])) == pytest.approx(1 / (1 + math.exp(-theta_m)), abs=1e-4)
        pick = rng.integers(0, n, n)
        folds = group_folds(np.bincount(pick, minlength=n).astype(float), 5)
        for k, (_, test) in enumerate(GroupKFold(5).split(np.zeros(n), groups=pick)):
            assert set(pick[test]) == set(np.flatnonzero(folds == k))


def _simulated_judge(
    rng: np.random.Generator, n: int, theta_m: float, theta_len: float, ties: float, shift: float
) -> tuple[list[float], list[int], list[int]]:
    """Verdicts that follow the minimal GLM: P(model wins) = σ(θ_m + θ_len·tanh(Δ/σ)), Δ = baseline − model
    length ~ N(shift·σ, σ²) with σ = 100 characters, a ``ties`` share of ties (counted ½, the win probability
    raised to keep E[y] on the GLM). Its true length-controlled win rate is σ(θ_m)."""
    sigma = 100.0
    delta = np.round(rng.normal(shift * sigma, sigma, n))
    p = 1 / (1 + np.exp(-(theta_m + theta_len * np.tanh(delta / sigma))))
    tie = rng.random(n) < ties
    win = rng.random(n) < np.clip((p - ties / 2) / (1 - ties), 0, 1)
    base = np.full(n, 600)
    return np.where(tie, 0.5, win.astype(float)).tolist(), (base - delta).astype(int).tolist(), base.tolist()


def test_intervals_cover_the_true_rate_of_simulated_judges() -> None:
    """25 data sets of 40 prompts from each of two simulated judges with a length effect (one whose raw win
    rate length inflates, one that prefers shorter answers): the 95% intervals, where estimable, contain the
    true σ(θ_m) 80% to 99% of the time (about 93% here; the L1 penalty's pull towards 0.5 costs a little),
    while the raw win rate's interval, which length inflates, mostly misses it."""
    rng = np.random.default_rng(0)
    covered, estimable, widths = 0, 0, []
    for theta_m, theta_len, ties, shift in ((0.5, -1.5, 0.0, -1.0), (-1.0, 1.0, 0.1, 0.5)):
        truth, raw_covered = 1 / (1 + math.exp(-theta_m)), 0
        for i in range(25):
            scores, lengths, base = _simulated_judge(rng, 40, theta_m, theta_len, ties, shift)
            result = length_controlled_win_rate(scores, lengths, base, bootstrap=80, seed=i)
            raw = win_rate(scores, lengths, base, bootstrap=200, seed=i)
            raw_covered += raw.ci_low <= truth <= raw.ci_high
            if result.estimable:
                estimable += 1
                covered += result.ci_low <= truth <= result.ci_high
                widths.append(result.ci_high - result.ci_low)
        if theta_m > 0:
            assert raw_covered / 25 < 0.6  # the test can tell a length-controlled interval from a raw one
    assert estimable >= 45  # of 50
    assert 0.8 <= covered / estimable <= 0.99
    assert float(np.mean(widths)) < 0.5  # informative intervals, not [0, 1]


# --- judging ----------------------------------------------------------------------------------------------------


def test_win_scores_with_a_function_judge() -> None:
    judge = make_judge("longer")
    scores = win_scores(
        judge, ["p1", "p2", "p3", "p4"], ["long one", "s", "same", "x"], ["short", "longer", "SAME", "x"]
    )
    assert scores == [1.0, 0.0, 0.5, 0.5]  # equal lengths: FIRST twice, a tie; identical texts: a tie


def test_a_failed_comparison_is_nan() -> None:
    judge = FunctionJudge(lambda prompt, first, second: FAILED, name="always-fails")
    assert math.isnan(win_scores(judge, ["p"], ["a"], ["b"])[0])


# --- preftune win-rate ------------------------------------------------------------------------------------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model = [{"prompt": f"q{i}", "completions": ["x" * (10 + 5 * (i % 3))], "model": "m"} for i in range(9)]
    baseline = [{"prompt": f"q{i}", "completion": "y" * 12} for i in reversed(range(9))]
    return _write(tmp_path / "model.jsonl", model), _write(tmp_path / "base.jsonl", baseline)


def test_cli_end_to_end(files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model, base = files
    out, store = tmp_path / "report.json", tmp_path / "verdicts.sqlite"
    argv = [
        "win-rate",
        f"outputs={model}",
        f"baseline={base}",
        "judge=longer",
        f"out={out}",
        f"store={store}",
        "eval.bootstrap=200",
        "eval.lc_bootstrap=3",
    ]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    # lengths 10, 15, 20 against 12: one loss, two wins per three prompts
    assert report["win_rate"]["win_rate"] == pytest.approx(6 / 9)
    assert report["win_rate"]["n"] == 9 and report["win_rate"]["failed"] == 0
    assert report["length_controlled"]["n"] == 9
    assert report["length_controlled"]["win_rate"] is None  # `longer` on 9 prompts: length separates its verdicts
    assert report["length_controlled"]["reason"].startswith("length separates the verdicts")
    printed = capsys.readouterr().out
    assert "win rate" in printed and "LC win rate" in printed and "n 9" in printed
    assert store.is_file()


@pytest.mark.parametrize(
    ("model_rows", "base_rows", "message"),
    [
        (None, [{"prompt": "a", "completion": "b"}], "no such file"),
        ([{"prompt": "a"}], [{"prompt": "a", "completion": "b"}], "line 1"),
        ([{"prompt": "a", "completion": "b"}, {"completion": "c"}], [{"prompt": "a", "completion": "b"}], "line 2"),
        (
            [{"prompt": "a", "completion": "b"}, {"prompt": "z", "completion": "c"}],
            [{"prompt": "a", "completion": "b"}],
            "not in baseline=",
        ),
    ],
)
def test_cli_refuses_bad_input_before_building_the_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_rows: list | None, base_rows: list, message: str
) -> None:
    model = tmp_path / "model.jsonl" if model_rows is None else _write(tmp_path / "model.jsonl", model_rows)
    base = _write(tmp_path / "base.jsonl", base_rows)
    # a judge that cannot be built: reaching it would give another error
    argv = ["win-rate", f"outputs={model}", f"baseline={base}", "judge=function:no_such_module:f"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
