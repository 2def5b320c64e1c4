"""The verdict rules of P1, P2 and P4 on hand-made numbers, including "cannot be tested here"."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from preftune.reproduce.rules import (
    Check,
    averaging_checks,
    bcr_checks,
    bcr_reason,
    bcr_rule,
    bcr_verdict,
    calls_checks,
    claim_reason,
    claim_verdict,
    companion_checks,
    evaluator_usable,
    gradient_checks,
    paired,
    ranking_checks,
    surrogate_checks,
    win_check,
)
from preftune.reproduce.verdicts import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, PARTLY, UNTESTABLE, Interval

CLEAR_WIN, COIN = Interval(0.7, 0.6, 0.8), Interval(0.52, 0.40, 0.64)


def test_claim_verdict_counts_only_decided_checks() -> None:
    yes, no, unknown = Check("a", True, ""), Check("b", False, ""), Check("c", None, "")
    assert claim_verdict([yes, unknown]) == HOLDS
    assert claim_verdict([yes, no, unknown]) == PARTLY
    assert claim_verdict([no, unknown]) == DOES_NOT_HOLD
    assert claim_verdict([unknown, unknown]) == UNTESTABLE
    assert claim_reason([yes, unknown]).startswith("1 of 1 decided checks pass")
    assert "c: cannot be tested" in claim_reason([yes, unknown])


def test_an_evaluator_at_chance_decides_nothing() -> None:
    assert evaluator_usable(Interval(0.62, 0.55, 0.69))
    assert not evaluator_usable(Interval(0.55, 0.48, 0.62))  # the interval holds 0.5
    assert not evaluator_usable(Interval(0.6, math.nan, math.nan))
    assert win_check("w", CLEAR_WIN, usable=True).passed is True
    assert win_check("w", COIN, usable=True).passed is False
    assert win_check("w", CLEAR_WIN, usable=False).passed is None


def test_paired_differences_are_per_seed() -> None:
    diff = paired([0.6, 0.7, 0.8], [0.5, 0.6, 0.7])
    assert diff.estimate == pytest.approx(0.1) and diff.high - diff.low == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="equal lengths"):
        paired([1.0], [1.0, 2.0])


def _analysis(tmp_path: Path, ul_bad: list[float], ex_bad: list[float], dpo: list[float]) -> dict:
    """A ``gradient_analysis.json``-shaped document on p = 0.5, 0.9, 0.99, 0.999 and h = -50, 0, 50."""
    ps, hs = [0.5, 0.9, 0.99, 0.999], [-50.0, 0.0, 50.0]

    def rows(objective: str, series: str, xs: list[float], values: list[float]) -> list[dict]:
        return [{"objective": objective, "x": x, "series": series, "value": v} for x, v in zip(xs, values, strict=True)]

    weights = (
        rows("mle", "w_good", ps, [0.1] * 4)
        + rows("mle", "w_bad", ps, [0.0] * 4)
        + rows("ul", "w_bad", ps, ul_bad)
        + rows("exmate", "w_bad", ps, ex_bad)
    )
    document = {
        "analyses": {
            "weight_vs_probability": {"rows": weights},
            "dpo_weight_vs_margin": {"rows": rows("dpo", "w_good", hs, dpo)},
        }
    }
    path = tmp_path / "gradient_analysis.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    return json.loads(path.read_text(encoding="utf-8"))


def test_gradient_statements_from_hand_made_weights(tmp_path: Path) -> None:
    good = _analysis(tmp_path, [0.1, 0.9, 9.9, 99.9], [0.003, 0.0045, 0.00495, 0.005], [0.099, 0.05, 0.0007])
    checks = gradient_checks(good)
    assert [c.passed for c in checks] == [True, True, True, True] and claim_verdict(checks) == HOLDS
    # UL capped (no growth near 1), ExMATE exploding, DPO's weight flat in the margin
    bad = _analysis(tmp_path, [0.1, 0.9, 1.0, 1.0], [0.003, 0.03, 0.3, 3.0], [0.05, 0.05, 0.05])
    assert [c.passed for c in gradient_checks(bad)] == [True, False, False, False]
    assert claim_verdict(gradient_checks(bad)) == PARTLY


def test_the_real_gradient_report_satisfies_the_statements(tmp_path: Path) -> None:
    from preftune.analysis.report import JSON_NAME, write_gradient_report

    write_gradient_report(["mle", "ul", "exmate", "dpo"], tmp_path)
    checks = gradient_checks(json.loads((tmp_path / JSON_NAME).read_text(encoding="utf-8")))
    assert claim_verdict(checks) == HOLDS, claim_reason(checks)


def _metrics(**per_objective: dict[str, list[float]]) -> dict:
    return {name.replace("_", "+"): values for name, values in per_objective.items()}


def test_surrogate_verdicts() -> None:
    metrics = _metrics(
        exmate={"accuracy": [0.62, 0.64, 0.63], "chosen_drift": [0.10, 0.11, 0.12]},
        mle={"accuracy": [0.55, 0.56, 0.57], "chosen_drift": [0.11, 0.12, 0.12]},
    )
    assert claim_verdict(surrogate_checks(metrics, CLEAR_WIN, usable=True, margin=0.05)) == HOLDS
    assert claim_verdict(surrogate_checks(metrics, COIN, usable=True, margin=0.05)) == PARTLY
    checks = surrogate_checks(metrics, COIN, usable=False, margin=0.05)
    assert [c.passed for c in checks] == [True, True, None] and claim_verdict(checks) == HOLDS
    worse = _metrics(
        exmate={"accuracy": [0.50, 0.52, 0.51], "chosen_drift": [-0.5, -0.6, -0.55]},
        mle={"accuracy": [0.55, 0.56, 0.57], "chosen_drift": [0.11, 0.12, 0.12]},
    )
    assert claim_verdict(surrogate_checks(worse, COIN, usable=True, margin=0.05)) == DOES_NOT_HOLD


def test_companion_verdicts_joint_and_staged() -> None:
    metrics = _metrics(
        dpo_mle={"accuracy": [0.55, 0.56, 0.57], "margin": [0.2, 0.3, 0.25]},
        dpo_exmate={"accuracy": [0.60, 0.62, 0.61], "margin": [0.4, 0.5, 0.45]},
        staged={"accuracy": [0.55, 0.57, 0.56], "margin": [0.2, 0.35, 0.2]},
    )
    checks = companion_checks(metrics, {"dpo+exmate": CLEAR_WIN, "staged": COIN}, usable=True)
    assert [c.passed for c in checks] == [True, True, True, False, False, False]
    assert claim_verdict(checks) == PARTLY
    only_stats = companion_checks(metrics, {"dpo+exmate": COIN}, usable=False)
    assert claim_verdict(only_stats) == HOLDS and only_stats[-1].passed is None


def test_averaging_verdicts_name_the_direction() -> None:
    change = {"dpo": {False: [40.0, 35.0, 45.0], True: [5.0, 8.0, 6.0]}, "ipo": {False: [10.0, 9.0], True: [9.0, 11.0]}}
    rising = averaging_checks(change, Interval(0.3, 0.1, 0.5), usable=True)
    assert [c.passed for c in rising] == [True, False, True] and "longer scores higher" in rising[-1].detail
    falling = averaging_checks(change, Interval(-0.3, -0.5, -0.1), usable=True)
    assert falling[-1].passed and "shorter scores higher" in falling[-1].detail
    assert averaging_checks(change, Interval(0.0, -0.2, 0.2), usable=True)[-1].passed is False
    assert averaging_checks(change, Interval(0.3, 0.1, 0.5), usable=False)[-1].passed is None


def test_p4_call_and_ranking_verdicts() -> None:
    calls = {"longer": {"ipr": [10.0, 12.0, 14.0], "round_robin": [30.0, 30.0, 42.0]}}
    assert claim_verdict(calls_checks(calls)) == HOLDS
    taus = {"score": [0.3, 0.4, 0.35, 0.3], "longer": [0.6, 0.7, 0.65, 0.6], "random": [0.0, 0.1, -0.1, 0.0]}
    checks = ranking_checks(taus)
    assert [c.passed for c in checks] == [True, False] and claim_verdict(checks) == PARTLY
    at_chance = ranking_checks({"score": [0.1, -0.1, 0.0], "random": [-0.1, 0.1, 0.0]})
    assert claim_verdict(at_chance) == UNTESTABLE
    # a scorer whose reward model is at chance on its own held-out pairs is no baseline: undecided, however wide the gap
    weak_scorer = ranking_checks(taus, baseline_valid=False)
    assert [c.passed for c in weak_scorer] == [None, None] and claim_verdict(weak_scorer) == UNTESTABLE


DPO = {"chosen_drift": [-0.30, -0.32, -0.31], "accuracy": [0.60, 0.62, 0.61]}
KEEPS = {"chosen_drift": [-0.06, -0.05, -0.07], "accuracy": [0.61, 0.62, 0.61]}  # drift +0.25, accuracy held
INERT = dict(DPO)  # a budget larger than DPO's fall: the penalty never acts, the run is DPO's
COSTLY = {"chosen_drift": [-0.06, -0.05, -0.07], "accuracy": [0.50, 0.51, 0.52]}  # drift up, accuracy −0.10
NOISY = {"chosen_drift": [0.0, -0.42, -0.06], "accuracy": [0.61, 0.62, 0.61]}  # drift +0.15 [−0.39, +0.69]


def _bcr(small: dict, large: dict, dpo: dict = DPO) -> tuple[list, str]:
    metrics = {"dpo": dpo, "dpo + bcr(delta=0.05)": small, "dpo + bcr(delta=0.2)": large}
    checks = bcr_checks(metrics, ["dpo + bcr(delta=0.05)", "dpo + bcr(delta=0.2)"], 0.05, 0.05)
    return [c.passed for c in checks], bcr_verdict(checks)


def test_bcr_holds_when_some_budget_keeps_the_chosen_likelihood_with_accuracy_held() -> None:
    assert _bcr(KEEPS, INERT) == ([True, False], HOLDS)  # one budget suffices; the inert one does not refute it
    assert _bcr(INERT, KEEPS) == ([False, True], HOLDS)


def test_bcr_does_not_hold_when_every_budget_goes_against_it() -> None:
    assert _bcr(INERT, INERT) == ([False, False], DOES_NOT_HOLD)  # no rise of the chosen drift beyond the margin
    assert _bcr(COSTLY, INERT) == ([False, False], DOES_NOT_HOLD)  # the rise costs more accuracy than the margin


def test_bcr_is_inconclusive_when_no_budget_supports_it_and_some_are_undecided() -> None:
    assert _bcr(NOISY, INERT) == ([None, False], INCONCLUSIVE)  # the drift's interval straddles the margin
    wide_accuracy = {**KEEPS, "accuracy": [0.70, 0.50, 0.61]}  # accuracy − dpo's: −0.007 [−0.28, +0.27]
    assert _bcr(wide_accuracy, INERT) == ([None, False], INCONCLUSIVE)
    # plain DPO that does not lower the chosen likelihood leaves BCR nothing to keep: no budget is decided
    flat = {"chosen_drift": [0.01, -0.02, 0.0], "accuracy": [0.60, 0.62, 0.61]}
    passed, verdict = _bcr(KEEPS, INERT, dpo=flat)
    assert (passed, verdict) == ([None, None], INCONCLUSIVE)
    one_seed = {k: v[:1] for k, v in DPO.items()}
    assert _bcr({k: v[:1] for k, v in KEEPS.items()}, one_seed, one_seed) == ([None, None], INCONCLUSIVE)
    assert bcr_verdict([]) == INCONCLUSIVE


def test_bcr_checks_say_their_numbers_and_the_rule_its_margins() -> None:
    [check] = bcr_checks({"dpo": DPO, "b": KEEPS}, ["b"], 0.05, 0.05)
    assert "chosen drift − dpo's 0.250 [0.207, 0.293]" in check.detail and "accuracy − dpo's 0.003" in check.detail
    flat = {**DPO, "chosen_drift": [0.01, -0.02, 0.0]}
    [check] = bcr_checks({"dpo": flat, "b": KEEPS}, ["b"], 0.05, 0.05)
    assert "dpo's own chosen drift -0.003 [-0.041, 0.035] does not lie below −0.05" in check.detail
    expected = f"Of 1 budgets: 0 supports, 0 goes against, 1 undecided — {check.name}: undecided ({check.detail})."
    assert bcr_reason([check]) == expected
    rule = bcr_rule(0.05, 0.02)
    assert "above +0.05" in rule and "below −0.02" in rule and "**inconclusive**" in rule
