"""``preftune evaluate --generate``: greedy answers against a baseline's, judged, on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preftune.cli.main import main

ARGS = [
    "evaluate",
    "--generate",
    "model.name=tiny-random",
    "prompts=bundled:hh-harmless",
    "limit=4",
    "eval.max_new_tokens=8",
    "eval.lc_bootstrap=10",
]


def test_against_the_chosen_responses(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    assert main([*ARGS, "eval.judges=[longer]", "eval.baseline=chosen", f"out={out}"]) == 0
    shown = capsys.readouterr().out
    assert "win rate" in shown and "LC win rate" in shown and "significant" in shown
    report = json.loads((out / "report.json").read_text())
    assert report["n_prompts"] == 4 and report["baseline"] == "chosen"
    (judged,) = report["judges"]
    rate = judged["win_rate"]
    assert rate["n"] + rate["failed"] == 4 and 0 <= rate["win_rate"] <= 1
    assert rate["wins"] + rate["ties"] + rate["losses"] == rate["n"]
    for key in ("ci_low", "ci_high", "mean_length", "baseline_mean_length"):
        assert key in rate
    assert {"win_rate", "ci_low", "ci_high", "coef_length"} <= set(judged["length_controlled"])
    assert "0.5" in judged["significance"]
    rows = [json.loads(line) for line in (out / "outputs.jsonl").read_text().splitlines()]
    base = [json.loads(line) for line in (out / "baseline.jsonl").read_text().splitlines()]
    assert len(rows) == len(base) == 4 and all("completion" in r and "longer" in r["scores"] for r in rows)
    assert not [p for p in out.iterdir() if p.name not in ("report.json", "outputs.jsonl", "baseline.jsonl")]


def test_the_model_against_itself_ties_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "self"
    assert main([*ARGS, "eval.judges=[longer, shorter]", "eval.baseline=model:tiny-random", f"out={out}"]) == 0
    assert "not significantly different from 0.5" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    outputs = [json.loads(line)["completion"] for line in (out / "outputs.jsonl").read_text().splitlines()]
    baseline = [json.loads(line)["completion"] for line in (out / "baseline.jsonl").read_text().splitlines()]
    assert outputs == baseline  # greedy decoding: the same model answers alike
    for judged in report["judges"]:  # longer and shorter
        rate = judged["win_rate"]
        assert rate["win_rate"] == 0.5 and rate["ties"] == rate["n"] == 4 and rate["failed"] == 0


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"eval.judges": None}, "eval.judges"),
        ({"eval.judges": "[oracle]"}, "unknown or incomplete judge"),
        ({"eval.judges": '["local:"]'}, "unknown or incomplete judge"),
        ({"eval.baseline": "best"}, "eval.baseline must be"),
        ({"eval.baseline": "file:missing.jsonl"}, "no such file"),
        ({"eval.baseline": "model:./no/such/model"}, "no such model folder"),
        ({"prompts": "missing.jsonl"}, "missing.jsonl"),
        ({"limit": "0"}, "limit must be at least 1"),
        ({"eval.max_new_tokens": "0"}, "eval.max_new_tokens must be at least 1"),
        ({"eval.lc_bootstrap": "-1"}, "eval.lc_bootstrap must be at least 0"),
        ({"eval.batch_size": "0"}, "eval.batch_size must be at least 1"),
        ({"model.name": "./no/such/model"}, "no such model folder"),
        ({"data.eval": "bundled:hh-harmless"}, "drop data.eval"),
    ],
)
def test_bad_input_is_one_line_before_any_model(
    tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str], change: dict, says: str
) -> None:
    options = {
        "model.name": "tiny-random",
        "prompts": "bundled:hh-harmless",
        "limit": "4",
        "eval.max_new_tokens": "8",
        "eval.judges": "[longer]",
        "eval.baseline": "chosen",
        "out": str(tmp_path / "out"),
    }
    options.update(change)
    args = ["evaluate", "--generate", *[f"{k}={v}" for k, v in options.items() if v is not None]]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and says in err and "\n" not in err, err
    assert not (tmp_path / "out").exists()


def test_chosen_needs_preference_data(tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n{"prompt": "Count to three."}\n')
    assert main(["evaluate", "--generate", "model.name=tiny-random", f"prompts={prompts}", "eval.judges=[longer]"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "eval.baseline=chosen needs preference data" in err and "\n" not in err


def test_generation_options_need_generate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["evaluate", "model.name=tiny-random", "data.eval=bundled:hh-harmless", "eval.judges=[longer]"]) == 2
    assert "add --generate" in capsys.readouterr().err


def test_greedy_answers_come_back_in_the_prompts_order() -> None:
    """Answered shortest first in batches, each answer is still the one its prompt gets alone."""
    from preftune.evaluation.generate_eval import greedy_answers

    prompts = [
        "A much longer question that runs on for quite a few more words than the others do?",
        "Hi?",
        "A question of middling length here?",
        "Why?",
    ]
    together = greedy_answers("tiny-random", prompts, 6, batch_size=2)
    alone = [greedy_answers("tiny-random", [p], 6, batch_size=1)[0] for p in prompts]
    assert together == alone
    assert len(set(together)) > 1  # distinct answers, so a shuffled order would show
