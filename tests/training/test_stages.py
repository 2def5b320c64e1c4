"""Two stages (P1's sequential DPO+ExMATE): ``exmate``, then ``dpo`` with ``reference: previous``.
The second stage starts from the first one's result and uses it as its reference; each stage has
its own output folder and its own TensorBoard run (this is also the tracker test)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tests.training.common import DataFiles, Run, metric_means, model_weights, train, trainer_state

CONFIG = """\
model:
  name: tiny-random
lora:
  rank: 4
  alpha: 8
data:
  max_length: 96
  train_size: 16
optim:
  lr: 1.0e-2
  batch_size: 8
  warmup_ratio: 0.0
  schedule: constant
eval:
  batch_size: 8
save_every: 2
trackers: [tensorboard]
stages:
  - name: exmate
    objective: exmate(lam=0.5)
    max_steps: 3
  - name: dpo
    objective: dpo
    reference: previous
    max_steps: 2
"""
LIKELIHOOD = ("logps/chosen", "logps/rejected", "likelihood_accuracy", "chosen_perplexity")


@pytest.fixture(scope="module")
def staged(data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    folder = tmp_path_factory.mktemp("staged")
    config = folder / "staged.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    out = folder / "run"
    # conversational data through the chat template; paths given on the command line over the YAML
    overrides = [f"output_dir={out}", f"data.train={data_files.conv_train}", f"data.eval={data_files.conv_eval}"]
    return Run(out, overrides, train(overrides, config_file=config))


def test_each_stage_has_its_outputs(staged: Run) -> None:
    records = staged.outcome["stages"]
    assert [(r["stage"], r["objective"], r["steps"]) for r in records] == [
        ("exmate", "exmate(lam=0.5)", 3),
        ("dpo", "dpo", 2),
    ]
    for record in records:
        stage_dir = staged.out / record["stage"]
        assert (stage_dir / "model" / "adapter_config.json").is_file()
        assert (stage_dir / "curves.png").is_file() and (stage_dir / "stage_done.json").is_file()
        assert (stage_dir / "checkpoints" / f"step-{record['steps']:06d}").is_dir()
    assert (staged.out / "summary.md").is_file() and (staged.out / "outcome.json").is_file()
    summary = (staged.out / "summary.md").read_text(encoding="utf-8")
    assert "## Stage `exmate`: `exmate(lam=0.5)`" in summary and "## Stage `dpo`: `dpo`" in summary
    # the second stage's adapter was trained on top of the first (a fresh adapter, not the first one's)
    assert model_weights(staged.out / "exmate" / "model").keys() == model_weights(staged.out / "dpo" / "model").keys()


def test_the_second_stage_starts_from_the_first_stage_result(staged: Run) -> None:
    first, second = staged.outcome["stages"]
    before_1, after_1 = metric_means(first["eval_before"]), metric_means(first["eval_after"])
    before_2 = metric_means(second["eval_before"])
    # the first stage moved the likelihoods, so agreeing with its end (not its start) means something
    assert abs(after_1["logps/chosen"] - before_1["logps/chosen"]) > 1e-2
    for name in LIKELIHOOD:
        assert before_2[name] == pytest.approx(after_1[name], rel=1e-5, abs=1e-4), name
        assert abs(before_2[name] - before_1[name]) > 1e-3 or name == "likelihood_accuracy", name
    # and the reference is that result too: at the second stage's first step, policy == reference
    step_1 = trainer_state(staged.out / "dpo", 2)["history"][0]
    assert abs(step_1["margin"]) < 1e-3 and abs(step_1["chosen_drift"]) < 1e-4
    assert step_1["loss"] == pytest.approx(math.log(2), abs=1e-4)  # -log σ(0): DPO at h = 0


def test_each_stage_logs_to_its_own_tensorboard_run(staged: Run) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for record in staged.outcome["stages"]:
        folder = staged.out / record["stage"]
        assert list(folder.glob("events.out.tfevents.*")), f"no event file in {folder}"
        events = EventAccumulator(str(folder))
        events.Reload()
        losses = events.Scalars("train/loss")
        assert [e.step for e in losses] == list(range(1, record["steps"] + 1)), record["stage"]
        history = trainer_state(folder, record["steps"])["history"]
        assert [e.value for e in losses] == pytest.approx([h["loss"] for h in history], rel=1e-6)
        evals = [e.step for e in events.Scalars("eval/accuracy")]
        assert evals == [0, record["steps"]]


def test_a_resumed_staged_run_skips_finished_stages(staged: Run, tmp_path: Path) -> None:
    """``resume`` after the whole run finished: every stage is loaded, none trained again."""
    config = tmp_path / "staged.yaml"
    config.write_text(CONFIG.replace("[tensorboard]", "[]"), encoding="utf-8")
    before = {s: model_weights(staged.out / s / "model") for s in ("exmate", "dpo")}
    outcome = train([*staged.overrides, "resume=true"], config_file=config)
    assert [r["steps"] for r in outcome["stages"]] == [3, 2]
    for stage, weights in before.items():
        after = model_weights(staged.out / stage / "model")
        assert all((after[n] == weights[n]).all() for n in weights), stage


@pytest.fixture(scope="module")
def staged_full(data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The same two stages, fine-tuning fully: each stage's model is its full weights."""
    folder = tmp_path_factory.mktemp("staged_full")
    config = folder / "staged.yaml"
    config.write_text(CONFIG.replace("[tensorboard]", "[]").replace("lr: 1.0e-2", "lr: 1.0e-3"), encoding="utf-8")
    out = folder / "run"
    overrides = [
        f"output_dir={out}",
        f"data.train={data_files.conv_train}",
        f"data.eval={data_files.conv_eval}",
        "lora.enabled=false",
    ]
    return Run(out, overrides, train(overrides, config_file=config))


def _assert_same_metrics(actual: dict, expected: dict[str, float]) -> None:
    for name, value in expected.items():
        assert actual[name].mean == pytest.approx(value, rel=1e-5, abs=1e-5), name


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_every_stage_model_loads_to_the_policy_it_trained(
    mode: str, staged: Run, staged_full: Run, data_files: DataFiles
) -> None:
    """What ``from_pretrained`` loads from each stage's ``model/`` scores the held-out pairs exactly as
    the run's in-memory policy did at the end of that stage. Under LoRA the second stage's adapter
    sits on the first stage's merged weights, and its ``adapter_config.json`` must say so: naming the
    original base, it loaded a different model (margin 2.87 against 5.40 in the issue's run)."""
    from preftune.evaluation.command import evaluate_model, evaluate_run
    from preftune.objectives import build

    run = staged if mode == "lora" else staged_full
    records = run.outcome["stages"]
    for index, record in enumerate(records):
        previous = run.out / records[index - 1]["stage"] / "model"
        # under LoRA the reference is the adapter's own base with adapters off; fully, the stage's start
        reference = None if mode == "lora" else ("tiny-random" if index == 0 else str(previous))
        beta, average = build(record["objective"]).margin_settings()
        metrics = evaluate_model(
            str(run.out / record["stage"] / "model"),
            reference,
            str(data_files.conv_eval),
            max_length=96,
            beta=beta,
            average=average,
            batch_size=8,
        )
        _assert_same_metrics(metrics, metric_means(record["eval_after"]))
    # `preftune evaluate --run` finds the last model and its reference by itself
    _assert_same_metrics(evaluate_run(run.out), metric_means(records[-1]["eval_after"]))


def test_a_stage_adapter_and_its_merged_weights_are_one_model(staged: Run) -> None:
    from transformers import AutoModelForCausalLM

    first = staged.out / "exmate"
    assert (first / "merged").is_dir()  # written because a later stage's adapter is relative to it
    ids = torch.tensor([[1, 504, 3365, 314, 253, 1345, 30, 2]])
    with torch.no_grad():
        from_adapter = AutoModelForCausalLM.from_pretrained(first / "model").eval()(input_ids=ids).logits
        from_merged = AutoModelForCausalLM.from_pretrained(first / "merged").eval()(input_ids=ids).logits
    torch.testing.assert_close(from_adapter, from_merged, atol=1e-5, rtol=1e-5)
    adapter = json.loads((staged.out / "dpo" / "model" / "adapter_config.json").read_text(encoding="utf-8"))
    assert Path(adapter["base_model_name_or_path"]) == (first / "merged").resolve()
