"""``preftune reproduce P1`` wired end to end on the tiny model: sections, verdicts, figures, results, CLI."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import replace
from pathlib import Path

import pytest

from preftune.cli.main import main
from preftune.reproduce.closing import closing_note
from preftune.reproduce.p1 import SCALES, reproduce_p1
from preftune.reproduce.p1_runs import VARIANTS
from preftune.reproduce.verdicts import VERDICTS
from tests.reproduce.conftest import bundled_rows


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory, gold_files: tuple[Path, Path]) -> tuple[Path, dict]:
    """The test scale (one seed, one step: every variant and path, not the statistics), its policies trained on
    bundled rows 40..120 and its gold model on rows 0..40."""
    tmp = tmp_path_factory.mktemp("p1")
    (tmp / "train.jsonl").write_text(bundled_rows(40, 120), encoding="utf-8")
    training = copy.deepcopy(SCALES["test"].training)
    training["data"]["train"] = str(tmp / "train.jsonl")
    scale = replace(SCALES["test"], training=training)
    lines: list[str] = []
    source, cache = gold_files
    results = reproduce_p1(scale, tmp / "out", say=lines.append, gold_source=source, cache=cache)
    assert any(line.startswith("gold reward model: ") for line in lines)
    return tmp / "out", results


@pytest.mark.slow
def test_p1_report_has_every_claim_with_a_computed_verdict(report: tuple[Path, dict]) -> None:
    out, results = report
    assert set(results["claims"]) == {"gradients", "surrogate", "companion"}
    assert results["claims"]["gradients"]["verdict"] == "holds"  # exact weights: the statements hold by algebra
    for claim in results["claims"].values():
        assert claim["verdict"] in VERDICTS and claim["data"]["checks"]
    text = (out / "report.md").read_text(encoding="utf-8")
    assert "**The gold evaluator.**" in text and "Held-out accuracy" in text
    for section in re.split(r"^## ", text, flags=re.MULTILINE)[2:-1]:
        assert "**What we measured.**" in section and re.search(r"^\*\*Verdict: ", section, re.MULTILINE)
    assert json.loads((out / "results.json").read_text(encoding="utf-8")) == json.loads(json.dumps(results))


@pytest.mark.slow
def test_p1_trains_every_variant_at_every_seed_and_scores_them(report: tuple[Path, dict]) -> None:
    out, results = report
    assert set(results["runs"]) == set(VARIANTS)
    seeds = list(SCALES["test"].seeds)
    prompts = len(results["start"]["answers"])
    for variant, run in results["runs"].items():
        assert [r["seed"] for r in run["per_seed"]] == seeds, variant
        assert len(run["gold_scores"]) == len(seeds) and all(len(s) == prompts for s in run["gold_scores"])
        assert all(len(r["answers"]) == prompts for r in run["per_seed"]), variant
        assert {"accuracy", "margin", "chosen_drift"} <= set(run["metrics"]), variant
    head = results["claims"]["companion"]["data"]["head_to_head"]
    assert set(head) == {"dpo+exmate vs dpo+mle", "exmate→dpo vs dpo+mle"}
    for name in results["claims"]["gradients"]["figures"]:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    note = closing_note({"P1": results})
    assert "Gold evaluator: held-out accuracy" in note and "(b) ExMATE is a better surrogate for MLE" in note


def test_cli_knows_p1_and_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "P9", f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err
    assert "P1" in err and "all" in err
    assert main(["reproduce", "P1", "scale=test", f"out={tmp_path}"]) == 2  # test is for the suite only
    assert main(["reproduce", "all", "scale=huge", f"out={tmp_path}"]) == 2


@pytest.mark.parametrize("name", ["small", "full"])
def test_every_p1_run_of_a_scale_builds_a_valid_config(name: str, tmp_path: Path) -> None:
    """``full`` never runs on this CPU: at least every config it would build passes its own checks."""
    from preftune.reproduce.p1 import get_scale
    from preftune.reproduce.p1_runs import variant_config
    from preftune.run.checks import check

    scale = get_scale(name)
    for variant in VARIANTS:
        check(variant_config(scale.training, variant, scale.seeds[-1], tmp_path / variant))


def test_identical_answers_are_counted_by_seed_and_prompt() -> None:
    """A head-to-head win rate of 0.5 can be a draw of equal texts: the table says how many there are."""
    from preftune.reproduce.p1_report import identical_answers
    from preftune.reproduce.p1_runs import Run

    first = [Run("a", 0, {}, ["x", "y", "z"], 1.0), Run("a", 1, {}, ["x", "q", "z"], 1.0)]
    second = [Run("b", 0, {}, ["x", "y", "w"], 1.0), Run("b", 1, {}, ["q", "q", "z"], 1.0)]
    assert identical_answers(first, second) == "4 of 6"
    with pytest.raises(ValueError):  # runs of different seeds or prompts are not paired silently
        identical_answers(first, second[:1])


@pytest.mark.slow
def test_the_staged_runs_first_stage_is_the_exmate_run(tmp_path: Path) -> None:
    """``run_all`` reads ``exmate`` from the staged run's first stage: it must be the run ``exmate`` alone gives
    (same start, data, seed and steps), statistics and answers alike."""
    from preftune.reproduce.p1_runs import STAGED, train_runs

    (tmp_path / "train.jsonl").write_text(bundled_rows(40, 120), encoding="utf-8")
    training = copy.deepcopy(SCALES["test"].training)
    training["data"]["train"] = str(tmp_path / "train.jsonl")
    training["optim"]["max_steps"] = 2
    prompts = ["Hi?", "How do I bake bread?"]
    (alone,) = train_runs(training, "exmate", 0, tmp_path / "alone", prompts, 4)
    first, staged = train_runs(training, STAGED, 0, tmp_path / "staged", prompts, 4)
    assert (first.variant, staged.variant) == ("exmate", STAGED)
    assert alone.answers == first.answers
    assert set(alone.metrics) == set(first.metrics) and alone.metrics
    for name, value in alone.metrics.items():
        assert first.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert [c["step"] for c in first.curve] == [c["step"] for c in alone.curve]
    assert staged.metrics != first.metrics  # the second stage trained on
