"""``preftune reproduce P3``: the verdict rules on hand-made numbers, a whole report at the test scale,
and the command line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch

from preftune.cli.main import main
from preftune.lab.bandit import BanditConfig, BanditResult, Curve, make_bandit, samples_drawn
from preftune.reproduce import ClaimSection, reproduce_p3
from preftune.reproduce.p3 import length_section
from preftune.reproduce.p3_bandit import bandit_section
from preftune.reproduce.p3_kl import KLRun, kl_section, run_kl_sweep
from preftune.reproduce.report import render_section
from preftune.reproduce.verdicts import (
    DOES_NOT_HOLD,
    HOLDS,
    NOT_RUN,
    PARTLY,
    Interval,
    aggregate,
    clearly_above,
    mean_interval,
    wilson,
    within_margin,
)

MARGIN = 0.05


# --- the rules -------------------------------------------------------------------------------------


def test_aggregate_maps_checks_to_verdicts() -> None:
    assert aggregate([True, True, True]) == HOLDS
    assert aggregate([True, False, True]) == PARTLY
    assert aggregate([False, False]) == DOES_NOT_HOLD
    assert aggregate([]) == DOES_NOT_HOLD  # nothing checked is nothing shown


def test_interval_rules() -> None:
    assert clearly_above(Interval(0.3, 0.2, 0.4), MARGIN)
    assert not clearly_above(Interval(0.3, 0.04, 0.56), MARGIN)  # overlaps the margin
    assert within_margin(Interval(0.0, -0.03, 0.04), MARGIN)
    assert not within_margin(Interval(0.0, -0.06, 0.04), MARGIN)
    unknown = Interval(0.3, math.nan, math.nan)  # one seed: no interval, so no check passes
    assert not clearly_above(unknown, MARGIN) and not within_margin(unknown, MARGIN)


def test_mean_interval_and_wilson() -> None:
    interval = mean_interval([1.0, 2.0, 3.0])
    assert interval.estimate == pytest.approx(2.0)
    assert interval.high - interval.estimate == pytest.approx(4.303 * 1.0 / math.sqrt(3), rel=1e-4)
    assert not mean_interval([1.0]).known
    share = wilson(8, 8)
    assert share.estimate == 1.0 and share.high == 1.0 and 0.6 < share.low < 0.7
    assert not wilson(0, 0).known


# --- bandit sections from hand-made curves ---------------------------------------------------------


def _result(peak: str, scores: dict[tuple[str, str], float]) -> BanditResult:
    """A bandit result whose every step's reward is the given score plus a small per-seed offset."""
    config = BanditConfig(peak=peak, methods=("bon", "dpo"), seeds=4, steps=5)
    offsets = torch.tensor([-0.01, 0.0, 0.005, 0.01], dtype=torch.float64)
    curves = []
    for method in config.methods:
        for regime in config.regimes:
            offsets = offsets.roll(1)  # each curve's seeds differ a little, differently
            rewards = (scores[method, regime] + offsets).unsqueeze(1).expand(-1, config.steps + 1).clone()
            histograms = torch.zeros(len(config.snapshot_steps()), 100, dtype=torch.float64)
            curves.append(Curve(method, regime, rewards, samples_drawn(config, regime), histograms))
    return BanditResult(config, make_bandit(config), tuple(curves), 0.0, 0.05)


def _scores(bon_off: float, bon_on: float, dpo_off: float, dpo_on: float) -> dict[tuple[str, str], float]:
    return {
        ("bon", "offline"): bon_off,
        ("bon", "on_policy"): bon_on,
        ("dpo", "offline"): dpo_off,
        ("dpo", "on_policy"): dpo_on,
    }


@pytest.mark.parametrize(
    ("scores", "verdict"),
    [
        (_scores(0.1, 0.5, 0.5, 0.9), HOLDS),  # on-policy and the negative gradient both far ahead
        (_scores(0.1, 0.9, 0.1, 0.9), PARTLY),  # on-policy ahead, the negative gradient no help
        (_scores(0.1, 0.5, 0.12, 0.5), PARTLY),  # ... and one regime's gap below the margin
        (_scores(0.3, 0.3, 0.3, 0.3), DOES_NOT_HOLD),  # all alike
        (_scores(0.9, 0.1, 0.5, 0.1), DOES_NOT_HOLD),  # the opposite
    ],
)
def test_far_peak_verdict_from_hand_made_curves(scores: dict, verdict: str) -> None:
    section = bandit_section(_result("far", scores), MARGIN, ())
    assert section.verdict == verdict, section.reason
    assert len(section.data["contrasts"]) == 3


@pytest.mark.parametrize(
    ("scores", "verdict"),
    [
        (_scores(0.6, 0.61, 0.6, 0.62), HOLDS),
        (_scores(0.6, 0.6, 0.6, 0.9), PARTLY),  # dpo on-policy pulls away: two contrasts leave the margin
        (_scores(0.1, 0.9, 0.5, 1.0), DOES_NOT_HOLD),
    ],
)
def test_near_peak_verdict_from_hand_made_curves(scores: dict, verdict: str) -> None:
    section = bandit_section(_result("near", scores), MARGIN, ())
    assert section.verdict == verdict, section.reason


# --- the KL toy --------------------------------------------------------------------------------------


def _masses(category: int, path: list[float]) -> torch.Tensor:
    """``[T+1, 4]`` masses with the given path for ``category`` (the rest split evenly)."""
    mass = torch.tensor(path, dtype=torch.float64)
    rest = (1 - mass) / 3
    return torch.stack([mass if c == category else rest for c in range(4)], dim=1)


def _run(category: int, forward: list[float], reverse: list[float]) -> KLRun:
    return KLRun("gradient descent", 0.5, forward=_masses(category, forward), reverse=_masses(category, reverse))


FAST_DROP, SLOW_DROP = [0.3, 0.1, 0.04, 0.01], [0.3, 0.2, 0.1, 0.04]
FAST_RISE, SLOW_RISE = [0.1, 0.35, 0.4, 0.45], [0.1, 0.2, 0.3, 0.4]


def test_kl_verdict_follows_methods_section_7() -> None:
    """Check 1: reverse KL empties the ruled-out category 1 sooner; check 2: forward KL reaches the far mode 3
    sooner. A tie fails."""
    seeks = _run(1, forward=SLOW_DROP, reverse=FAST_DROP)
    covers = _run(3, forward=FAST_RISE, reverse=SLOW_RISE)
    worked = [_run(2, [0.1, 0.6, 0.6, 0.6], [0.1, 0.2, 0.6, 0.6])]
    assert kl_section(worked, (), [seeks], [covers]).verdict == HOLDS
    backwards = (_run(1, forward=FAST_DROP, reverse=SLOW_DROP), _run(3, forward=SLOW_RISE, reverse=FAST_RISE))
    assert kl_section(worked, (), [backwards[0]], [backwards[1]]).verdict == DOES_NOT_HOLD
    assert kl_section(worked, (), [seeks], [backwards[1]]).verdict == PARTLY
    tie = _run(1, forward=FAST_DROP, reverse=FAST_DROP)
    assert kl_section(worked, (), [tie], [covers]).verdict == PARTLY


def test_kl_toy_as_measured_follows_the_gradients() -> None:
    """Towards q′ (category 1 at 0.001) the logit pushes on category 1 at p0 are forward p₁ − q₁ = 0.299 and
    reverse p₁·(log(p₁/q₁) − KL(p0‖q′)) ≈ 1.18, so reverse KL empties it first; towards the bimodal q from a p0
    nearer mode 0, forward KL (p − q) raises mode 3 sooner. P3's own pair, the worked example, goes the other way
    (forward KL reaches category 2 first, reverse KL raises category 0): shown, not judged."""
    from preftune.reproduce.p3_kl import BIMODAL_P0, BIMODAL_Q, EXCLUDING_Q

    lrs = (100, (0.1, 0.5), (0.1,))
    section = kl_section(
        run_kl_sweep(*lrs), (), run_kl_sweep(*lrs, q=EXCLUDING_Q), run_kl_sweep(*lrs, q=BIMODAL_Q, p0=BIMODAL_P0)
    )
    assert section.verdict == HOLDS, section.reason
    assert [r["lr"] for r in section.data["excluding"]["runs"]] == [0.1, 0.5, 0.1]
    assert all(r["reverse_steps"] < r["forward_steps"] for r in section.data["excluding"]["runs"])
    assert all(r["forward_steps"] < r["reverse_steps"] for r in section.data["bimodal"]["runs"])
    for run in section.data["worked_example"]["runs"]:
        assert run["forward_steps_to_level"] < run["reverse_steps_to_level"]
        assert run["reverse_category0_rise"] > 0 >= run["forward_category0_rise"]
    assert "sooner in 3 of 3 runs" in section.reason and "not part of the verdict" in section.measured


# --- the whole report ----------------------------------------------------------------------------------


def _fake_length(scale: str, out: Path, say) -> ClaimSection:
    say(f"fake length study at {scale}")
    return ClaimSection("length", "Length", "paper says", "we measured", HOLDS, "because")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("p3")
    lines: list[str] = []
    results = reproduce_p3("test", out, say=lines.append, length=_fake_length)
    assert "fake length study at test" in lines
    return out, results


@pytest.mark.slow
def test_report_has_every_section_with_a_verdict_line(report: tuple[Path, dict]) -> None:
    out, results = report
    text = (out / "report.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert len(headings) == 1 + 7 + 1  # at a glance, the seven sections, how verdicts are decided
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[2:-1]:
        assert "**What the paper reports.**" in section and "**What we measured.**" in section, section[:200]
        assert re.search(r"^\*\*Verdict: (holds|partly|does not hold here|not run|n/a)", section, re.MULTILINE), section
    sequence = {"far_peak_sequence", "near_peak_sequence"}
    assert set(results["claims"]) == {"far_peak", "near_peak", *sequence, "kl", "length", "lemma_6_2"}
    assert results["claims"]["length"]["verdict"] == HOLDS  # the study given, its section in place
    assert results["claims"]["kl"]["verdict"] == HOLDS  # docs/methods.md §7's checks, at the test scale's steps
    for key in ("far_peak", "near_peak", *sequence):
        assert results["claims"][key]["verdict"] in (HOLDS, PARTLY, DOES_NOT_HOLD)
        assert results["claims"][key]["data"]["contrasts"]  # on-policy − offline at least
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == json.loads(json.dumps(results))


@pytest.mark.slow
def test_report_figures_exist_and_are_linked(report: tuple[Path, dict]) -> None:
    out, results = report
    text = (out / "report.md").read_text(encoding="utf-8")
    figures = [name for claim in results["claims"].values() for name in claim["figures"]]
    assert "gradient_cosine.png" in figures and "bandit_far_reward.png" in figures and "kl_toy.png" in figures
    assert {"kl_toy_excluding.png", "kl_toy_bimodal.png"} <= set(figures)
    assert "sequence_bandit_far_reward.png" in figures and "sequence_bandit_near_tokens.png" in figures
    for name in figures:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in text


@pytest.mark.slow
def test_lemma_records_cover_both_objectives(report: tuple[Path, dict]) -> None:
    runs = report[1]["claims"]["lemma_6_2"]["data"]["runs"]
    assert set(runs) == {"dpo", "mle"}
    for run in runs.values():
        steps = [record["step"] for record in run["records"]]
        assert steps == [0, 1, 2]  # before the first step, after step 1, at the end
    # both runs start from the same model and adapter, so their first measurement is the same
    assert runs["dpo"]["records"][0]["values"] == pytest.approx(runs["mle"]["records"][0]["values"], abs=1e-9)


def test_without_a_length_study_its_section_says_not_run(tmp_path: Path) -> None:
    section = length_section(None, "test", tmp_path, print)
    assert section.verdict == NOT_RUN and section.key == "length"
    assert "**Verdict: not run.**" in render_section(section)
    assert length_section(_fake_length, "test", tmp_path, print).verdict == HOLDS


# --- the command line ------------------------------------------------------------------------------------


def test_cli_refuses_an_unknown_paper(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "P9", f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "P9" in err[0] and "P3" in err[0]
    assert not (tmp_path / "out").exists()


def test_cli_refuses_an_unknown_scale(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["reproduce", "P3", "scale=test", f"out={tmp_path}"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_length_verdict_from_hand_made_scores() -> None:
    """Per task min and skew: on-policy DPO sooner than each offline method (leads' intervals above 0) and
    fastest of all (lowest, lead over the runner-up above 0); mode means within one token."""
    from preftune.reproduce.p3_length import curve_score, length_checks
    from preftune.reproduce.verdicts import aggregate

    assert curve_score([6.0, 2.0, 0.0]) == 1.0  # step 0 left out
    # offline_dpo minus on-policy DPO per seed on min: 1.4, 1.5, 1.6 -> mean 1.5, t(2) interval 1.5 ± 0.248
    good = {
        "min": {"onpolicy_dpo": [0.5, 0.5, 0.5], "offline_dpo": [1.9, 2.0, 2.1]},
        "skew": {"onpolicy_dpo": [0.4, 0.3, 0.5], "pref_ft": [6.0, 5.0, 7.0]},
        "mode": {"onpolicy_dpo": [0.4, 0.5, 0.3], "rwr": [1.3, 1.2, 1.4]},
    }
    checks = length_checks(good)
    assert [n for n, _, _ in checks] == [
        "min: on-policy DPO sooner than offline",
        "min: on-policy DPO fastest of all",
        "skew: on-policy DPO sooner than offline",
        "skew: on-policy DPO fastest of all",
        "mode: mean scores within 1 token",
    ]
    assert all(p for _, p, _ in checks) and aggregate([p for _, p, _ in checks]) == "holds"
    assert checks[0][2] == "lead over offline_dpo +1.50 [+1.25, +1.75]"
    # skew: on-policy DPO beats the offline method but ties REINFORCE (lead -1, +3, -1: the interval holds 0)
    noisy = {
        **good,
        "skew": {"onpolicy_dpo": [2.0, 0.0, 2.0], "reinforce": [1.0, 3.0, 1.0], "offline_dpo": [4.0, 3.0, 5.0]},
        "mode": {"onpolicy_dpo": [0.1, 0.1, 0.1], "rwr": [2.0, 2.0, 2.0]},
    }
    checks = length_checks(noisy)
    assert [p for _, p, _ in checks] == [True, True, True, False, False]
    assert "runner-up reinforce +0.33" in checks[3][2] and aggregate([p for _, p, _ in checks]) == "partly"
    other = {"min": {"onpolicy_dpo": [3.0], "reinforce": [0.2]}}
    assert length_checks(other) == [("min: on-policy DPO fastest of all", False, "lowest reinforce 0.20")]
    one_seed = {"min": {"onpolicy_dpo": [0.2], "reinforce": [3.0], "pref_ft": [1.0]}}
    assert [p for _, p, _ in length_checks(one_seed)] == [True, True]  # one seed: the signs decide


def test_length_leads_are_paired_differences_with_intervals() -> None:
    from preftune.reproduce.p3_length import leads

    scores = {
        "min": {"onpolicy_dpo": [0.5, 0.5, 0.5], "offline_dpo": [1.9, 2.0, 2.1], "rwr": [0.0, 1.0, 0.5]},
        "mode": {"onpolicy_dpo": [1.0, 1.0, 1.0], "rwr": [3.0, 3.0, 3.0]},
    }
    rows = leads(scores)
    # offline_dpo: 1.4, 1.5, 1.6 -> 1.5 ± 4.303·0.1/√3 = 1.5 ± 0.248; rwr: -0.5, 0.5, 0 -> 0 ± 1.24; mode: none
    assert rows == [
        ("min", "offline_dpo", "+1.50 [+1.25, +1.75]", "sooner"),
        ("min", "rwr", "+0.00 [-1.24, +1.24]", "not significant"),
    ]


@pytest.mark.parametrize("name", ["small", "full"])
def test_every_study_of_a_scale_builds_a_valid_config(name: str, tmp_path: Path) -> None:
    """``full`` never runs on this CPU: at least every config it would build passes its own checks."""
    from preftune.lab.bandit import BanditConfig
    from preftune.lab.length import LengthConfig
    from preftune.lab.sequence_bandit import SequenceBanditConfig
    from preftune.reproduce.p3 import get_scale
    from preftune.reproduce.p3_lemma import training_config
    from preftune.reproduce.p3_length import SEEDS, STEPS, TASKS
    from preftune.run.checks import check

    scale = get_scale(name)
    for peak in ("far", "near"):
        BanditConfig(peak=peak, methods=scale.bandit_methods, seeds=scale.bandit_seeds, steps=scale.bandit_steps)
        SequenceBanditConfig(
            peak=peak,
            methods=scale.bandit_methods,
            seeds=scale.sequence_seeds,
            steps=scale.sequence_steps,
            length=scale.sequence_length,
        )
    for task in TASKS:
        LengthConfig(task=task, steps=STEPS[name], seed=SEEDS[name] - 1)
    for objective in ("dpo", "mle"):
        check(training_config(scale.training, objective, tmp_path / objective))


def test_skew_borrows_only_the_on_policy_runs_of_min(monkeypatch: pytest.MonkeyPatch) -> None:
    """On skew only the offline methods train; the on-policy curves are min's, the offline ones skew's own."""
    import preftune.lab.length as length
    from preftune.reproduce.p3_length import _task_runs

    trained: list[tuple[str, tuple[str, ...]]] = []

    def fake_study(config: length.LengthConfig) -> length.LengthResult:
        trained.append((config.task, config.methods))
        curves = tuple(
            length.Curve(m, (length.Measure(0, float(len(config.task)), 0.0, 1.0),), 0.0) for m in config.methods
        )
        return length.LengthResult(config, None, curves, 0.0, 0.0)  # type: ignore[arg-type]

    monkeypatch.setattr(length, "run_length_study", fake_study)
    min_runs = _task_runs("min", 2, 1, lambda _: None, None)
    (skew,) = _task_runs("skew", 2, 1, lambda _: None, min_runs)
    assert trained == [("min", length.METHODS), ("skew", ("offline_dpo", "pref_ft"))]
    assert [c.method for c in skew.curves] == list(length.METHODS)
    for curve in skew.curves:  # the fake's value is the task name's length: min 3, skew 4
        assert curve.measures[0].length == (3.0 if curve.method in length.ON_POLICY else 4.0)
