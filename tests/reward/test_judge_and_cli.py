"""The reward-model judge (``rm:PATH``), ``preftune rank method=score`` and ``preftune train-rm``
end to end through the command line, on the tiny model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from preftune.cli.main import main
from preftune.judging import FIRST, SECOND, BothOrders, Verdict
from preftune.judging.reward_model import RewardModelJudge, reward_verdict
from preftune.judging.specs import make_judge
from preftune.reward import Prepared, RewardModel, RewardResult


def test_verdict_rule() -> None:
    assert reward_verdict(1.0, 1.0) == FIRST and reward_verdict(0.0, 1.0) == SECOND
    assert reward_verdict(float("nan"), 1.0) == -1


def test_judge_answers_by_the_scores(trained: tuple[Prepared, RewardResult]) -> None:
    folder = trained[1].output_dir
    judge = make_judge(f"rm:{folder}")
    assert isinstance(judge, RewardModelJudge)
    prompts = ["Tell me about tea, item 1.", "Tell me about cats, item 2."]
    pairs = [("A note on tea. yes", "A note on tea. no"), ("A note on cats. no", "A note on cats. yes")]
    scores = RewardModel(folder).score(prompts + prompts, [a for a, _ in pairs] + [b for _, b in pairs])
    expected = [FIRST if scores[i] >= scores[2 + i] else SECOND for i in range(2)]
    assert judge.judge(prompts, pairs) == expected == [FIRST, SECOND]
    both = BothOrders(judge)
    assert both.compare(prompts[0], *pairs[0]) == Verdict.A and both.compare(prompts[1], *pairs[1]) == Verdict.B
    assert both.compare(prompts[0], "same", "same") == Verdict.TIE
    assert judge.judge(prompts[:1], [pairs[0][::-1]]) == [SECOND]  # the other order, from remembered rewards


def test_identity_names_the_folder_and_changes_with_the_weights(
    trained: tuple[Prepared, RewardResult], tmp_path: Path
) -> None:
    copy = tmp_path / "rm-copy"
    shutil.copytree(trained[1].output_dir, copy)
    before = RewardModelJudge(copy).identity()
    assert before.startswith(f"rm:{copy.resolve()}:") and before == RewardModelJudge(copy).identity()
    weights = copy / "model.safetensors"
    tensors = load_file(weights)
    tensors["score.weight"] = tensors["score.weight"] * 2
    save_file(tensors, weights, metadata={"format": "pt"})
    assert RewardModelJudge(copy).identity() != before


def test_rank_method_score_end_to_end(trained: tuple[Prepared, RewardResult], tmp_path: Path) -> None:
    rows = [
        {"prompt": f"Tell me about tea, item {i}.", "completions": ["A note. no", "A note. yes", "Hm. no"]}
        for i in range(3)
    ]
    rows.append({"prompt": [{"role": "user", "content": "Tell me about maps."}], "completions": ["no", "Maps. yes"]})
    source = tmp_path / "gen.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out, pairs = tmp_path / "ranked.jsonl", tmp_path / "pairs.jsonl"
    argv = [
        "rank",
        f"input={source}",
        "method=score",
        f"score_model={trained[1].output_dir}",
        f"out={out}",
        f"pairs={pairs}",
    ]
    assert main(argv) == 0
    ranked = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["ranks"][1] for r in ranked] == [0, 0, 0, 0]  # the "yes" completion ranks first everywhere
    chosen = [json.loads(line)["chosen"] for line in pairs.read_text().splitlines()]
    assert chosen[:3] == ["A note. yes"] * 3 and chosen[3] == [{"role": "assistant", "content": "Maps. yes"}]


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["method=score"], "score_model=PATH"),
        (["score_model=x"], "method=score"),
    ],
)
def test_rank_score_without_its_model_is_one_line(tmp_path: Path, capsys, argv_tail, message) -> None:
    source = tmp_path / "gen.jsonl"
    source.write_text(json.dumps({"prompt": "q", "completions": ["a", "b"]}) + "\n")
    assert main(["rank", f"input={source}", f"out={tmp_path / 'o.jsonl'}", *argv_tail]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_train_rm_command_end_to_end(marker_pairs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "rm"
    argv = [
        "train-rm",
        "model.name=tiny-random",
        f"data.train={marker_pairs}",
        f"output_dir={out}",
        "lora.enabled=false",
        "optim.epochs=1",
        "optim.lr=1e-3",
        "optim.batch_size=8",
        "data.max_length=64",
        "data.eval_size=8",
        "data.train_size=16",
        "optim.seed=3",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "held-out accuracy" in err and " -> " in err and "saved to" in err and "step 2/2" in err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["lora"] is False and metrics["config"]["seed"] == 3 and metrics["train_pairs"] == 16
    assert metrics["held_out_after"]["pairs"] == 8 and (out / "model.safetensors").is_file()


def _bad_columns(tmp_path: Path) -> Path:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q", "good": "a", "bad": "b"}) + "\n")
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "missing.jsonl"),
        ("columns", "bad.jsonl"),
        ("lr", "lr must be"),
        ("used", "not empty"),
        ("key", "setting does not exist: 'optim.max_steps' (a 'preftune train' setting)"),
    ],
)
def test_train_rm_bad_input_is_one_line(tmp_path: Path, marker_pairs: Path, capsys, case, message) -> None:
    data, extra, out = str(marker_pairs), [], tmp_path / "rm"
    if case == "missing":
        data = str(tmp_path / "missing.jsonl")
    elif case == "columns":
        data = str(_bad_columns(tmp_path))
    elif case == "lr":
        extra = ["optim.lr=-1"]
    elif case == "used":
        out.mkdir()
        (out / "x").write_text("x")
    else:
        extra = ["optim.max_steps=1"]  # a train setting that train-rm does not have
    argv = ["train-rm", "model.name=tiny-random", f"data.train={data}", f"output_dir={out}", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err, err
