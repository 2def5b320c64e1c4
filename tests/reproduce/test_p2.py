"""P2 (Grinsztajn et al. 2024): the section's verdict on hand-made runs, the slope, the configs of every scale,
and the report wired end to end on the tiny model."""

from __future__ import annotations

import copy
import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from preftune.cli.main import main
from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.p2 import SCALES, get_scale, grid, objective, reproduce_p2
from preftune.reproduce.p2_report import Point, averaging_section, slope
from preftune.reproduce.verdicts import HOLDS, PARTLY, UNTESTABLE, VERDICTS, Interval
from tests.reproduce.conftest import bundled_rows


def _gold(low: float) -> GoldEvaluator:
    return GoldEvaluator(Path("gold"), Interval(0.7, low, 0.8), 0.5, 100, 400, 0, "hh", 1.0, True)


def _point(loss: str, averaged: bool, beta: float, length: int, score: float) -> Point:
    return Point(loss, averaged, beta, 0, [length - 1, length, length + 1], [score - 0.1, score, score + 0.1])


def _runs(summed_lengths: list[int], averaged_lengths: list[int]) -> list[Point]:
    """dpo and ipo at three β; the gold score rises with length (0.01 per character)."""
    points = []
    for loss in ("dpo", "ipo"):
        for beta, s, a in zip((0.1, 0.3, 1.0), summed_lengths, averaged_lengths, strict=True):
            points += [_point(loss, False, beta, s, 0.01 * s), _point(loss, True, beta, a, 0.01 * a)]
    return points


def test_slope_and_its_interval() -> None:
    line = slope([1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0])
    assert line.estimate == pytest.approx(2.0) and line.low == pytest.approx(2.0) and line.high == pytest.approx(2.0)
    noisy = slope([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
    assert noisy.low < noisy.estimate < noisy.high
    assert not slope([1.0, 2.0], [1.0, 2.0]).known and math.isnan(slope([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).estimate)


def test_averaging_verdict_from_hand_made_runs() -> None:
    start = _point("start", False, 0.0, 100, 1.0)
    invariant = averaging_section(_runs([150, 160, 170], [101, 102, 100]), start, _gold(0.6), ())
    assert invariant.verdict == HOLDS, invariant.reason
    assert "longer scores higher" in invariant.reason
    drifting = averaging_section(_runs([101, 102, 100], [150, 160, 170]), start, _gold(0.6), ())
    assert drifting.verdict == PARTLY, drifting.reason  # averaged moved the length more; the trend still holds
    at_chance = averaging_section(_runs([150, 160, 170], [101, 102, 100]), start, _gold(0.45), ())
    trade_off = at_chance.data["checks"][-1]
    assert trade_off["passed"] is None and at_chance.verdict == HOLDS  # the length checks alone decide
    assert averaging_section(_runs([150, 150, 150], [150, 150, 150]), start, _gold(0.45), ()).verdict != UNTESTABLE


def test_grid_and_objectives() -> None:
    scale = SCALES["test"]
    assert len(grid(scale)) == len(scale.seeds) * len(scale.losses) * len(scale.betas) * 2
    assert objective("ipo", True, 0.1) == "ipo(beta=0.1, average=True)"


@pytest.mark.parametrize("name", ["small", "full"])
def test_every_p2_run_of_a_scale_builds_a_valid_config(name: str, tmp_path: Path) -> None:
    """``small`` and ``full`` never run in the suite: every config they would build passes its own checks."""
    from preftune.reproduce.p1_runs import variant_config
    from preftune.run.checks import check

    scale = get_scale(name)
    for seed, loss, beta, averaged in grid(scale):
        check(variant_config(scale.training, objective(loss, averaged, beta), seed, tmp_path / f"{loss}{beta}"))


@pytest.mark.slow
def test_p2_report_end_to_end(tmp_path: Path, gold_files: tuple[Path, Path]) -> None:
    (tmp_path / "train.jsonl").write_text(bundled_rows(40, 120), encoding="utf-8")
    training = copy.deepcopy(SCALES["test"].training)
    training["data"]["train"] = str(tmp_path / "train.jsonl")
    scale = replace(SCALES["test"], training=training, losses=("dpo",))
    source, cache = gold_files
    results = reproduce_p2(scale, tmp_path / "out", say=lambda _: None, gold_source=source, cache=cache)
    assert results["claims"]["averaging"]["verdict"] in VERDICTS
    assert len(results["runs"]) == len(grid(scale)) and {r["averaged"] for r in results["runs"]} == {False, True}
    assert all(len(r["scores"]) == scale.prompts == len(r["lengths"]) for r in results["runs"])
    out = tmp_path / "out"
    assert (out / "p2_length_vs_score.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "**Verdict: " in (out / "report.md").read_text(encoding="utf-8")
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == json.loads(json.dumps(results))


def test_cli_knows_p2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "P9", f"out={tmp_path / 'out'}"]) == 2
    assert "P2" in capsys.readouterr().err
