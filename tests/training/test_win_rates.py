"""Win rates as a periodic evaluation of ``preftune train`` (``eval.judges``; docs/methods.md §6).

The judges are ``longer`` and ``shorter`` (function judges: a verdict from the lengths alone), so
every win rate can be derived by hand from the answers the run wrote, and the answers themselves
are checked against the starting and the trained model answering the same prompts greedily.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.training.common import DataFiles, lora_overrides, online_overrides, train


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _by_hand(outputs: list[str], baseline: list[str]) -> float:
    """``longer``'s win rate: 1 for a longer answer, ½ for one of the same length, 0 for a shorter one."""
    scores = [
        1.0 if len(o) > len(b) else 0.5 if len(o) == len(b) else 0.0 for o, b in zip(outputs, baseline, strict=True)
    ]
    return sum(scores) / len(scores)


WIN_RATES = {
    "eval.judges": "[longer,shorter]",
    "eval.win_rate_every": 2,
    "eval.win_rate_prompts": 5,
    "eval.max_new_tokens": 12,
    "optim.lr": 5e-2,
}


def test_win_rates_every_k_steps_against_the_starting_policy(data_files: DataFiles, tmp_path: Path) -> None:
    """Steps 2, 4 and 6 (the end), both judges; the baseline file holds the untrained model's greedy
    answers, the outputs file the trained model's; each win rate equals the one derived from them."""
    from preftune.evaluation.generate_eval import greedy_answers

    out = tmp_path / "run"
    outcome = train(lora_overrides(data_files, out, **WIN_RATES, merge_lora="false"))
    records = outcome["stages"][0]["win_rates"]
    assert [(r["step"], r["judge"]) for r in records] == [(s, j) for s in (2, 4, 6) for j in ("longer", "shorter")]
    for longer, shorter in zip(records[::2], records[1::2], strict=True):
        assert longer["failed"] == shorter["failed"] == 0
        assert longer["win_rate"] + shorter["win_rate"] == pytest.approx(1.0)  # the judges are opposites

    baseline, outputs = _rows(out / "win_rate_baseline.jsonl"), _rows(out / "win_rate_outputs.jsonl")
    prompts = [r["prompt"] for r in baseline]
    assert len(prompts) == 5 and [r["prompt"] for r in outputs] == prompts
    assert [r["completion"] for r in baseline] == greedy_answers("tiny-random", prompts, 12, 8)
    trained = greedy_answers(str(out / "model"), prompts, 12, 8)
    assert [r["completion"] for r in outputs] == trained
    assert trained != [r["completion"] for r in baseline], "training at this rate changes the greedy answers"
    last = records[-2]
    assert last["win_rate"] == pytest.approx(_by_hand(trained, [r["completion"] for r in baseline]))
    assert last["mean_length"] == pytest.approx(sum(map(len, trained)) / 5)
    summary = (out / "summary.md").read_text(encoding="utf-8")
    assert "| 6 | longer |" in summary and "| 2 | shorter |" in summary
    # 5 prompts: the length-controlled rate is not estimated, and every record and table says why
    assert all(r["lc_reason"] is not None for r in records)
    assert "cannot be estimated: " in summary


def test_a_resumed_run_keeps_its_baseline_and_earlier_win_rates(data_files: DataFiles, tmp_path: Path) -> None:
    """Crashed after step 2 and resumed: the records equal the uninterrupted run's (step 2's read back
    from the checkpoint, the starting policy's answers read back from the run folder)."""
    from tests.training.test_resume import Crash, crash_after

    whole = train(lora_overrides(data_files, tmp_path / "whole", **WIN_RATES))
    cut = lora_overrides(data_files, tmp_path / "cut", **WIN_RATES)
    with pytest.raises(Crash):
        train(cut, callbacks=[crash_after(3)])
    baseline = (tmp_path / "cut" / "win_rate_baseline.jsonl").read_text(encoding="utf-8")
    again = train([*cut, "resume=true"])
    assert (tmp_path / "cut" / "win_rate_baseline.jsonl").read_text(encoding="utf-8") == baseline
    assert json.dumps(again["stages"][0]["win_rates"]) == json.dumps(whole["stages"][0]["win_rates"])


def test_an_online_run_reports_its_win_rate_against_the_chosen_responses(tmp_path: Path) -> None:
    """On-policy, ``eval.baseline=chosen``: one record after the last round, against the held-out
    pairs' chosen responses."""
    from preftune.evaluation.generate_eval import response_text

    out = tmp_path / "run"
    overrides = online_overrides(
        out,
        {
            "online.prompts_per_round": 2,
            "sampling.n": 2,
            "sampling.max_new_tokens": 6,
            "objective": "dpo",
            "eval.judges": "[longer]",
            "eval.baseline": "chosen",
            "eval.max_new_tokens": 6,
        },
    )
    outcome = train(overrides)
    [record] = outcome["stages"][0]["win_rates"]
    assert record["step"] == outcome["stages"][0]["steps"]
    chosen = [response_text(r["chosen"]) for r in _rows(out / "heldout.jsonl")]
    assert record["baseline_mean_length"] == pytest.approx(sum(map(len, chosen)) / len(chosen))
    outputs = [r["completion"] for r in _rows(out / "win_rate_outputs.jsonl")]
    assert record["win_rate"] == pytest.approx(_by_hand(outputs, chosen))


def test_a_length_controlled_rate_that_cannot_be_estimated_is_reported_as_such() -> None:
    """The console line and summary.md's table give the reason instead of a number; an estimable one its number."""
    from preftune.evaluation.generative import length_controlled_win_rate
    from preftune.run.summary import win_rate_table
    from preftune.training.win_rates import format_record

    lc = length_controlled_win_rate([1.0, 0.0, 1.0], [9, 1, 8], [5, 5, 5], bootstrap=0)  # `longer`'s verdicts
    record = {
        "step": 4,
        "judge": "longer",
        "win_rate": 2 / 3,
        "ci_low": 0.0,
        "ci_high": 1.0,
        "lc_win_rate": lc.win_rate,
        "lc_reason": lc.reason,
        "wins": 2,
        "ties": 0,
        "losses": 1,
        "failed": 0,
        "mean_length": 6.0,
        "baseline_mean_length": 5.0,
    }
    assert lc.reason is not None and lc.reason.startswith("length separates the verdicts")
    assert f"LC cannot be estimated ({lc.reason})" in format_record(record, 10, "start")
    assert f"| cannot be estimated: {lc.reason} |" in win_rate_table([record], "start")
    estimable = {**record, "lc_win_rate": 0.61, "lc_reason": None}
    assert "LC 0.610;" in format_record(estimable, 10, "start") and "| 0.610 |" in win_rate_table([estimable], "start")


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (["eval.judges=[nonsense]"], "eval.judges: nonsense: unknown or incomplete judge"),
        (["eval.judges=[rm:/no/such/folder]"], "no such reward-model folder"),
        (["eval.judges=[longer]", "eval.baseline=best"], "eval.baseline must be one of start, chosen"),
        (["eval.judges=[longer]", "data.eval_size=0"], "eval.judges needs held-out prompts"),
        (["eval.judges=[longer]", "eval.win_rate_prompts=0"], "eval.win_rate_prompts must be >= 1"),
    ],
)
def test_impossible_win_rate_settings_are_refused_in_one_line(tmp_path, capsys, setting, message) -> None:
    from preftune.cli.main import main

    argv = [
        "train",
        "model.name=tiny-random",
        "data.train=bundled:hh-harmless",
        f"output_dir={tmp_path / 'r'}",
        *setting,
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_win_rates_without_held_out_prompts_are_refused_before_the_model_loads(tmp_path, capsys, monkeypatch):
    """An unset data.eval_size holds out none of 8 pairs: eval.judges has no prompt to answer, said in
    one line before any model loads."""
    import preftune.run.train
    from preftune.cli.main import main

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(preftune.run.train, "load_model", no_loading)
    data = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Question {i}?", "chosen": f"a good answer {i}", "rejected": f"bad {i}"} for i in range(8)]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    argv = [
        "train",
        "model.name=tiny-random",
        f"data.train={data}",
        "eval.judges=[longer]",
        "optim.batch_size=4",
        f"output_dir={tmp_path / 'r'}",
        "trackers=[]",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "eval.judges needs held-out prompts, and none were held out" in err and err.count("\n") == 1
