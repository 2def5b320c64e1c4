"""P4's claim (d), the whole pipeline (Chen et al. 2024): its rule on hand-made numbers, the ranking into
best-vs-worst pairs, the cache of the generated completions (the tiny model). The study wired into the report
end to end is tested in test_p4.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preftune.reproduce.p4_pipeline import PIPELINE_SCALES, generate_completions, rank_pairs
from preftune.reproduce.rules import claim_reason, pipeline_checks, pipeline_verdict
from preftune.reproduce.verdicts import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE, UNTESTABLE, Interval


def test_pipeline_rule_holds_fails_or_is_inconclusive() -> None:
    win, loss, coin = Interval(0.66, 0.56, 0.75), Interval(0.34, 0.25, 0.44), Interval(0.55, 0.45, 0.65)
    assert pipeline_verdict(pipeline_checks(win, usable=True), usable=True) == HOLDS
    assert pipeline_verdict(pipeline_checks(loss, usable=True), usable=True) == DOES_NOT_HOLD
    assert "original wins" in claim_reason(pipeline_checks(loss, usable=True))
    inconclusive = pipeline_checks(coin, usable=True)
    assert [c.passed for c in inconclusive] == [None] and pipeline_verdict(inconclusive, usable=True) == INCONCLUSIVE
    assert "cannot separate them" in claim_reason(inconclusive)
    assert ": inconclusive (gold win rate" in claim_reason(inconclusive, "inconclusive")
    touching = pipeline_checks(Interval(0.55, 0.5, 0.6), usable=True)  # 0.5 is not above
    assert pipeline_verdict(touching, usable=True) == INCONCLUSIVE
    unknown = pipeline_checks(Interval(1.0, float("nan"), float("nan")), usable=True)
    assert pipeline_verdict(unknown, usable=True) == INCONCLUSIVE
    at_chance = pipeline_checks(win, usable=False)  # a clear win, but an evaluator at chance decides nothing
    assert [c.passed for c in at_chance] == [None] and "at chance" in at_chance[0].detail
    assert pipeline_verdict(at_chance, usable=False) == UNTESTABLE


def test_rank_pairs_takes_the_longest_against_the_shortest(tmp_path: Path) -> None:
    """The `longer` judge with IPR: best = longest, worst = shortest; a prompt whose best and worst tie gives no
    pair; a row with an empty completion is left out; conversational prompts get assistant messages."""
    user = [{"role": "user", "content": "hi"}]
    rows = [
        {"prompt": user, "completions": ["medium one", "a much longer completion", "short"]},
        {"prompt": "plain", "completions": ["abc", "xyzw", "ab"]},
        {"prompt": "tied", "completions": ["same", "size"]},
        {"prompt": "empty", "completions": ["", "something"]},
    ]
    info = rank_pairs(rows, "longer", tmp_path / "pairs.jsonl")
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text(encoding="utf-8").splitlines()]
    assert pairs == [
        {
            "prompt": user,
            "chosen": [{"role": "assistant", "content": "a much longer completion"}],
            "rejected": [{"role": "assistant", "content": "short"}],
        },
        {"prompt": "plain", "chosen": "xyzw", "rejected": "ab"},
    ]
    assert info["pairs"] == 2 and info["undecided"] == 1 and info["left_out_empty"] == 1 and info["prompts"] == 4
    assert info["chosen_mean_length"] == (24 + 4) / 2 and info["rejected_mean_length"] == (5 + 2) / 2
    assert info["judge_calls"] > 0 and info["comparisons"] >= 3


@pytest.mark.slow
def test_generated_completions_are_sampled_once_then_read_from_the_cache(tmp_path: Path) -> None:
    settings = PIPELINE_SCALES["test"]
    prompts = [[{"role": "user", "content": f"Question {i}?"}] for i in range(3)]
    rows, info = generate_completions("tiny-random", prompts, settings, tmp_path)
    assert [r["prompt"] for r in rows] == prompts and not info["cached"]
    assert all(len(r["completions"]) == settings.n for r in rows) and info["completions"] == 3 * settings.n
    again, second = generate_completions("tiny-random", prompts, settings, tmp_path)
    assert second["cached"] and again == rows and second["file"] == info["file"]
    other, third = generate_completions("tiny-random", prompts[:2], settings, tmp_path)  # other inputs, other key
    assert not third["cached"] and third["file"] != info["file"] and len(other) == 2


@pytest.mark.parametrize("name", ["small", "full"])
def test_every_pipeline_run_of_a_scale_builds_a_valid_config(name: str, tmp_path: Path) -> None:
    """``full`` never runs on this CPU: at least both runs it would train pass the trainer's own checks."""
    from preftune.reproduce.p1_runs import variant_config
    from preftune.reproduce.p4_pipeline import with_data
    from preftune.run.checks import check

    settings = PIPELINE_SCALES[name]
    training = with_data(settings.training, tmp_path / "pairs.jsonl", tmp_path / "held-out.jsonl")
    config = variant_config(training, settings.objective, settings.seeds[-1], tmp_path / "run")
    check(config)
    assert config.objective == "dpo+bcr" and config.data.eval == str(tmp_path / "held-out.jsonl")
    assert config.data.train_size is None and config.optim.max_steps == settings.training["optim"]["max_steps"]
    assert settings.judge == "longer" and settings.temperature == 1.0  # never the gold model
