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
    length_controlled_win_rate,
    length_feature,
    win_rate,
    win_scores,
)
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
    # derivative is C·n·(σ(θ_m) − ȳ) + 1 = 0, so σ(θ_m) = ȳ − 1/(C·n). The 25 prompts are laid out so that
    # every one of GroupKFold's five folds holds 3 wins, 1 tie, 1 loss (mean 0.7): held-out loss falls as C grows,
    # cross-validation picks the largest C, 1e4, and the rate is 0.7 − 1/(1e4·25) = 0.699996.
    scores = [1.0] * 15 + [0.5] * 5 + [0.0] * 5
    result = length_controlled_win_rate(scores, [100] * 25, [100] * 25, bootstrap=0)
    assert result.C == pytest.approx(1e4)
    assert result.coef_length == 0.0
    assert result.win_rate == pytest.approx(0.7 - 1 / (1e4 * 25), abs=2e-6)
    assert win_rate(scores, [100] * 25, [100] * 25, bootstrap=0).win_rate == pytest.approx(0.7)


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
    scores, lengths = _case(36, 3), LONGER + SHORTER
    first = length_controlled_win_rate(scores, lengths, BASE, bootstrap=8, seed=1)
    again = length_controlled_win_rate(scores, lengths, BASE, bootstrap=8, seed=1)
    assert (first.ci_low, first.ci_high) == (again.ci_low, again.ci_high)
    assert first.ci_low <= first.win_rate <= first.ci_high


def test_too_few_prompts_give_nan() -> None:
    assert math.isnan(length_controlled_win_rate([1.0, math.nan], [3, 4], [1, 1], bootstrap=0).win_rate)


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
    argv = ["win-rate", "--outputs", str(model), "--baseline", str(base), "--judge", "longer", "--out", str(out),
            "--store", str(store), "--bootstrap", "200", "--lc-bootstrap", "3"]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    # lengths 10, 15, 20 against 12: one loss, two wins per three prompts
    assert report["win_rate"]["win_rate"] == pytest.approx(6 / 9)
    assert report["win_rate"]["n"] == 9 and report["win_rate"]["failed"] == 0
    assert report["length_controlled"]["n"] == 9
    printed = capsys.readouterr().out
    assert "win rate" in printed and "LC win rate" in printed and "n 9" in printed
    assert store.is_file()


@pytest.mark.parametrize(
    ("model_rows", "base_rows", "message"),
    [
        (None, [{"prompt": "a", "completion": "b"}], "no such file"),
        ([{"prompt": "a"}], [{"prompt": "a", "completion": "b"}], "line 1"),
        ([{"prompt": "a", "completion": "b"}, {"completion": "c"}], [{"prompt": "a", "completion": "b"}], "line 2"),
        ([{"prompt": "a", "completion": "b"}, {"prompt": "z", "completion": "c"}], [{"prompt": "a", "completion": "b"}],
         "not in --baseline"),
    ],
)  # fmt: skip
def test_cli_refuses_bad_input_before_building_the_judge(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_rows: list | None, base_rows: list, message: str
) -> None:
    model = tmp_path / "model.jsonl" if model_rows is None else _write(tmp_path / "model.jsonl", model_rows)
    base = _write(tmp_path / "base.jsonl", base_rows)
    # a judge that cannot be built: reaching it would give another error
    argv = ["win-rate", "--outputs", str(model), "--baseline", str(base), "--judge", "function:no_such_module:f"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err
