"""P3's synthetic length tasks (Tajwar et al. 2024, docs/methods.md §7): the preference, a short run, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preftune.cli.main import main
from preftune.errors import SpecError
from preftune.lab.length import (
    LengthConfig,
    LengthLabeller,
    LengthResult,
    alphabet,
    dataset_mode,
    preference,
    preference_pairs,
    run_length_study,
    skew_floor,
)
from preftune.modeling import load_tokenizer

# Small enough for a test (one thread): few prompts, few steps; the warm-up is the default one, so
# its cached warm model is shared with `preftune lab length` (a cold cache costs one warm-up first).
SMALL = {"steps": 8, "prompts": 8, "eval_prompts": 4, "eval_samples": 4, "checkpoints": 3}


@pytest.fixture(scope="module")
def min_run() -> LengthResult:
    return run_length_study(LengthConfig(task="min", methods=("onpolicy_dpo", "pref_ft"), **SMALL))


def test_the_labeller_counts_tokens_and_rewards_by_the_task() -> None:
    tokenizer = load_tokenizer("tiny-random")
    texts = ["a b", "a b c d", "a b c d e f"]
    assert [alphabet(k) for k in (2, 4, 6)] == texts
    assert [LengthLabeller(tokenizer, "min", 4).count(t) for t in texts] == [2, 4, 6]
    assert LengthLabeller(tokenizer, "min", 4).rewards(["p"], [texts]) == [[-2.0, -4.0, -6.0]]
    assert LengthLabeller(tokenizer, "skew", 4).rewards(["p"], [texts]) == [[-2.0, -4.0, -6.0]]
    assert LengthLabeller(tokenizer, "mode", 4).rewards(["p"], [texts]) == [[-2.0, -0.0, -2.0]]


def test_pairs_prefer_by_the_task_rule() -> None:
    """Lengths 2, 4, 6 ("a b", "a b c d", "a b c d e f") of one prompt, mode 4."""
    lengths = [[2, 4, 6]]
    assert preference("min", 2, 4, mode=4) == 1 and preference("min", 6, 4, mode=4) == -1
    assert preference("mode", 4, 2, mode=4) == 1 and preference("mode", 2, 6, mode=4) == 0  # equally far
    # min: every pair, the shorter chosen
    assert preference_pairs("min", lengths, 4, None, 10, seed=0) == [(0, 0, 1), (0, 0, 2), (0, 1, 2)]
    # mode: the mode chosen over both others; 2 vs 6 is a tie and makes no pair
    assert preference_pairs("mode", lengths, 4, None, 10, seed=0) == [(0, 1, 0), (0, 1, 2)]
    # skew: the short response is dropped (floor 4), the shorter of the rest chosen
    assert preference_pairs("skew", lengths, 4, 4, 10, seed=0) == [(0, 1, 2)]
    assert len(preference_pairs("min", lengths, 4, None, 2, seed=0)) == 2  # per_prompt caps


def test_mode_and_skew_floor_of_the_dataset() -> None:
    assert dataset_mode([[3, 5, 5], [3, 8]]) == 3  # 3 and 5 twice each: the smaller
    assert dataset_mode([[7, 7, 2]]) == 7
    assert skew_floor([[1, 2, 3], [4, 5, 6]], 0.5) == 4
    assert skew_floor([[1, 2, 3], [4, 5, 6]], 0.99) == 6


def test_config_refuses_bad_values() -> None:
    with pytest.raises(SpecError, match="task must be one of min, mode, skew"):
        LengthConfig(task="max")
    with pytest.raises(SpecError, match="did you mean 'reinforce'"):
        LengthConfig(methods=("reinforc",))
    with pytest.raises(SpecError, match="max_new_tokens"):
        LengthConfig(max_new_tokens=8)
    with pytest.raises(SpecError, match="only the tiny-random model"):
        LengthConfig(model="smollm2-135m-instruct")
    assert LengthConfig(steps=40, checkpoints=5).checkpoint_steps() == (0, 10, 20, 30, 40)


def test_onpolicy_dpo_shortens_responses_and_the_data_follow_the_rule(min_run: LengthResult) -> None:
    data = min_run.dataset
    assert data.pairs and all(c < r for c, r in zip(data.chosen_lengths, data.rejected_lengths, strict=True))
    assert data.floor is None and 1 <= data.mode <= 16
    curves = {c.method: c for c in min_run.curves}
    assert curves["onpolicy_dpo"].steps == [0, 4, 8] == curves["pref_ft"].steps
    start = curves["onpolicy_dpo"].measures[0]
    # every method starts from the same warm model, measured with the same seed
    assert curves["pref_ft"].measures[0] == start
    assert start.finished > 0.9 and 3 < start.length < 12  # the warm model recites and stops
    end = curves["onpolicy_dpo"].measures[-1]
    assert end.length < start.length - 2, (start, end)


def test_cli_refuses_a_bad_task_and_method_before_any_model(no_model: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "length", "task=max"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: task=max: expected one of min, mode, skew") and err.count("\n") == 1
    assert main(["lab", "length", "methods=dpo"]) == 2
    assert capsys.readouterr().err.startswith("error: length: unknown method 'dpo'")


def test_cli_writes_png_and_json(
    min_run: LengthResult, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command's own run is replaced by the module's small one (the study itself is tested above)."""
    import preftune.lab.length as length

    asked: list[LengthConfig] = []
    monkeypatch.setattr(length, "run_length_study", lambda config: asked.append(config) or min_run)
    argv = ["lab", "length", "task=min", "methods=onpolicy_dpo,pref_ft", "optim.max_steps=8"]
    assert main([*argv, f"out={tmp_path}"]) == 0
    assert asked[0].methods == ("onpolicy_dpo", "pref_ft") and asked[0].steps == 8
    out = capsys.readouterr().out
    assert "onpolicy_dpo" in out and "length_min.png" in out
    payload = json.loads((tmp_path / "length_min.json").read_text())
    assert [c["method"] for c in payload["curves"]] == ["onpolicy_dpo", "pref_ft"]
    assert payload["summary"][0]["end"] < payload["summary"][0]["start"]
    assert (tmp_path / "length_min.png").read_bytes().startswith(b"\x89PNG")


def test_seeds_share_the_warm_model_and_the_seeds_figure_draws(min_run: LengthResult, tmp_path: Path) -> None:
    """Replicates differ in ``seed`` only: one warm model (keyed by ``warmup_seed``) serves them all."""
    from preftune.lab.length import _accelerator, warm_model_path
    from preftune.lab.plots import length_figure, save_png

    tokenizer = load_tokenizer("tiny-random")
    paths = {warm_model_path(LengthConfig(task="min", seed=s), tokenizer, _accelerator()) for s in (0, 3)}
    assert len(paths) == 1 and (paths.pop() / "config.json").is_file()
    assert warm_model_path(LengthConfig(warmup_seed=0), tokenizer, _accelerator()).name.count("seed0") == 1
    figure = length_figure([min_run, min_run])
    save_png(figure, tmp_path / "seeds.png")
    assert (tmp_path / "seeds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # two identical runs: the band has no width, so each mean line is the run's own curve
    line = figure.axes[0].lines[0]
    assert list(line.get_ydata()) == pytest.approx(min_run.curves[0].values("min"))
