"""P4 (c) (Chen et al. 2024), budget-controlled regularisation: the section and its verdict on hand-made runs, the
curves over training and their figure, the runs of every scale, and the study trained on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest

from preftune.lab.plots import save_png
from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.p1 import SCALES as P1_SCALES
from preftune.reproduce.p1_runs import Run, variant_config
from preftune.reproduce.p4 import SCALES
from preftune.reproduce.p4_bcr import (
    BASELINE,
    DPOP,
    bcr_section,
    bcr_variant,
    curve_figure,
    mean_curves,
    run_study,
    runs_json,
)
from preftune.reproduce.verdicts import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, Interval

PROMPTS = 4
SMALL, LARGE = bcr_variant(0.05), bcr_variant(0.2)
DPO = ([-0.30, -0.32, -0.31], [0.60, 0.62, 0.61])  # (chosen drift, accuracy) per seed
KEEPS = ([-0.06, -0.05, -0.07], [0.61, 0.62, 0.61])
POSITIVE = ([0.01, 0.02, 0.0], [0.52, 0.50, 0.51])  # dpop: no fall, accuracy lost (shown, not in the rule)


def _gold() -> GoldEvaluator:
    return GoldEvaluator(Path("gold"), Interval(0.7, 0.6, 0.8), 0.5, 100, 400, 0, "hh", 1.0, True)


def _run(variant: str, seed: int, drift: float, accuracy: float, length: int) -> Run:
    """A run whose curve goes linearly from the start (drift 0, accuracy 0.5) to its end values at step 16."""
    metrics = {"accuracy": accuracy, "margin": 0.1, "chosen_drift": drift, "logps/chosen": -2.0 + drift}
    curve = [
        {"step": float(s), "accuracy": 0.5 + (accuracy - 0.5) * s / 16, "chosen_drift": drift * s / 16}
        for s in (0, 8, 16)
    ]
    return Run(variant, seed, metrics, ["x" * length] * PROMPTS, 1.0, curve)


def _runs(**ends: tuple[list[float], list[float]]) -> dict[str, list[Run]]:
    names = {"dpo": BASELINE, "small": SMALL, "large": LARGE, "dpop": DPOP}
    return {
        names[key]: [_run(names[key], seed, d, a, 10 + 5 * i) for seed, (d, a) in enumerate(zip(*end, strict=True))]
        for i, (key, end) in enumerate(ends.items())
    }


def _scores(runs: dict[str, list[Run]]) -> dict:
    """Gold scores: the start 0 on every prompt; a variant's i-th in the dict scores i − 1 (dpo loses, the rest
    beat the start more and more)."""
    scores: dict = {"start": [0.0] * PROMPTS}
    for i, (variant, seeds) in enumerate(runs.items()):
        scores[variant] = [[float(i - 1)] * PROMPTS for _ in seeds]
    return scores


def _section(runs: dict[str, list[Run]]):
    study = SCALES["small"].bcr
    return bcr_section(study, runs, _scores(runs), ["yy"] * PROMPTS, _gold(), ("p4_bcr_curves.png",))


def test_bcr_section_decides_from_the_runs_numbers() -> None:
    section = _section(_runs(dpo=DPO, small=KEEPS, large=DPO, dpop=POSITIVE))
    assert section.verdict == HOLDS, section.reason  # δ = 0.05 keeps the chosen likelihood, δ = 0.2 acts like dpo
    assert [c["passed"] for c in section.data["checks"]] == [True, False]
    assert "| dpo + bcr(delta=0.05) | 0.250 [0.207, 0.293] | 0.003 [-0.011, 0.018] | supports |" in section.measured
    assert "| dpo + dpop |" in section.measured and "shown, not in the rule" in section.measured
    assert "**The rule**" in section.measured and "by more than 0.05 nats/token" in section.measured
    assert section.reason.startswith("Of 2 budgets: 1 supports, 1 goes against, 0 undecided — ")
    assert section.figures == ("p4_bcr_curves.png",)
    inert = _section(_runs(dpo=DPO, small=DPO, large=DPO, dpop=POSITIVE))
    assert inert.verdict == DOES_NOT_HOLD, inert.reason
    one_seed = _section({v: seeds[:1] for v, seeds in _runs(dpo=DPO, small=KEEPS, large=DPO, dpop=DPO).items()})
    assert one_seed.verdict == INCONCLUSIVE, one_seed.reason


def test_bcr_section_shows_win_rates_against_the_start_with_length_beside() -> None:
    runs = _runs(dpo=DPO, small=KEEPS, large=DPO, dpop=POSITIVE)
    rates = _section(runs).data["win_rates_vs_start"]
    assert rates[BASELINE]["gold"]["rate"]["estimate"] == 0.0 and rates[SMALL]["gold"]["rate"]["estimate"] == 0.5
    assert rates[LARGE]["gold"]["rate"]["estimate"] == 1.0
    assert rates[SMALL]["longer"]["rate"]["estimate"] == 1.0  # 15 characters against the start's 2
    assert rates[SMALL]["gold"]["mean_length"] == 15 and rates[SMALL]["gold"]["baseline_mean_length"] == 2
    numbers = runs_json(runs, _scores(runs), ["yy"] * PROMPTS)
    assert numbers["runs"][SMALL]["per_seed"][1]["curve"] == runs[SMALL][1].curve
    assert numbers["runs"][SMALL]["metrics"]["chosen_drift"]["estimate"] == pytest.approx(-0.06)


def test_curves_are_means_over_seeds_at_the_steps_every_seed_evaluated(tmp_path: Path) -> None:
    runs = _runs(dpo=DPO, small=KEEPS)
    runs[SMALL][2] = Run(SMALL, 2, runs[SMALL][2].metrics, [], 1.0, runs[SMALL][2].curve[:2])  # stopped at step 8
    curves = mean_curves(runs)
    assert [s for s, _ in curves[BASELINE]["chosen_drift"]] == [0.0, 8.0, 16.0]
    assert curves[BASELINE]["chosen_drift"][-1][1] == pytest.approx(-0.31)
    assert curves[BASELINE]["accuracy"][1][1] == pytest.approx(0.555)
    assert [s for s, _ in curves[SMALL]["accuracy"]] == [0.0, 8.0]
    figure = curve_figure(curves)
    drift_ax, accuracy_ax = figure.axes[:2]
    assert len(drift_ax.lines) == len(accuracy_ax.lines) == 2
    assert list(drift_ax.lines[0].get_ydata()) == pytest.approx([0.0, -0.155, -0.31])
    path = save_png(figure, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["small", "full"])
def test_every_bcr_run_of_a_scale_is_p1s_run_with_periodic_evaluation(name: str, tmp_path: Path) -> None:
    """Same pairs and seeds as P1's runs at the scale, evaluated during training; every config passes its checks."""
    from preftune.run.checks import check

    study, p1 = SCALES[name].bcr, P1_SCALES[name]
    assert study.training["data"] == p1.training["data"] and set(study.seeds) <= set(p1.seeds)
    assert study.training["optim"] == p1.training["optim"] and study.training["lora"] == p1.training["lora"]
    assert 0 < study.training["eval"]["every"] < p1.training["optim"]["max_steps"]
    assert study.variants == (BASELINE, *(bcr_variant(d) for d in study.deltas), DPOP) and len(study.deltas) >= 2
    for variant in study.variants:
        config = variant_config(study.training, variant, study.seeds[-1], tmp_path / variant.replace(" ", ""))
        check(config)
        assert config.eval.every == study.training["eval"]["every"]


@pytest.mark.slow
def test_run_study_trains_every_variant_and_keeps_its_held_out_curve() -> None:
    """The test scale on the tiny model: dpo, dpo + bcr(δ) and dpo + dpop, two steps evaluated at each."""
    study = SCALES["test"].bcr
    lines: list[str] = []
    runs = run_study(study, ["Hello?", "What is 2 + 2?"], lines.append)
    assert list(runs) == [BASELINE, bcr_variant(0.05), DPOP] and len(lines) == 3
    for variant, seeds in runs.items():
        [run] = seeds
        assert [p["step"] for p in run.curve] == [0.0, 1.0, 2.0], variant
        assert run.curve[0]["chosen_drift"] == 0.0  # the policy is its reference before the first step
        assert run.curve[-1]["chosen_drift"] == run.metrics["chosen_drift"] != run.curve[1]["chosen_drift"]
        assert run.curve[-1]["accuracy"] == run.metrics["accuracy"] and len(run.answers) == 2
