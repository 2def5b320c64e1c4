"""What a run leaves behind loads with the standard classes and is the model that was trained:
the LoRA adapter (peft's ``AutoPeftModelForCausalLM``, and transformers' own adapter loading),
the merged folder and the full fine-tune folder (``AutoModelForCausalLM``) all score the held-out
pairs exactly as the run's final in-memory evaluation did. Also the report files, and
``preftune evaluate``, which must reproduce the same numbers from the saved folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from preftune.cli.config import load_config
from preftune.data import Batcher
from preftune.evaluation.command import evaluate_model
from preftune.evaluation.statistical import pair_values, summarise
from preftune.modeling import ModelReference, load_model, load_tokenizer, sequence_logprobs
from preftune.objectives import build
from preftune.run.inputs import load_examples, tokenize_inputs
from tests.training.common import Run, metric_means, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _eval_metrics(model: torch.nn.Module, run: Run) -> dict[str, float]:
    """The run's held-out statistics, recomputed with ``model`` as the policy and a freshly loaded
    tiny model as the reference."""
    config = load_config(None, run.overrides)
    tokenizer = load_tokenizer(config.model.name)
    eval_pairs = tokenize_inputs(load_examples(config.data), tokenizer, config.data).held_out
    beta, average = build(config.objective).margin_settings()
    reference = ModelReference(load_model(config.model.name))
    model.eval()

    def policy(batch):
        return sequence_logprobs(model, batch, with_tokens=False)

    values = pair_values(
        policy,
        reference,
        eval_pairs,
        torch.arange(len(eval_pairs)),
        Batcher(tokenizer.pad_token_id),
        8,
        "cpu",
        beta,
        average,
    )
    return {k: v.mean for k, v in summarise({k: torch.tensor(v) for k, v in values.items()}).items()}


def _assert_metrics_close(actual: dict[str, float], expected: dict[str, float]) -> None:
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        assert actual[name] == pytest.approx(value, rel=1e-5, abs=1e-5), name


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.tensor([[1, 504, 3365, 314, 253, 1345, 30, 2], [9, 8, 7, 6, 5, 4, 3, 2]])
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_the_lora_adapter_and_merged_folders_are_the_trained_model(lora_run: Run) -> None:
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    expected = metric_means(lora_run.outcome["stages"][0]["eval_after"])
    before = metric_means(lora_run.outcome["stages"][0]["eval_before"])
    assert abs(expected["margin"] - before["margin"]) > 0.1  # training changed the model measurably

    adapter = AutoPeftModelForCausalLM.from_pretrained(str(lora_run.out / "model"))
    _assert_metrics_close(_eval_metrics(adapter, lora_run), expected)
    merged = AutoModelForCausalLM.from_pretrained(str(lora_run.out / "merged"))
    assert not (lora_run.out / "merged" / "adapter_config.json").exists()
    _assert_metrics_close(_eval_metrics(merged, lora_run), expected)
    via_transformers = AutoModelForCausalLM.from_pretrained(str(lora_run.out / "model"))  # base found by itself

    logits = _logits(adapter)
    torch.testing.assert_close(_logits(merged), logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(_logits(via_transformers), logits, atol=1e-4, rtol=1e-4)
    assert (_logits(load_model("tiny-random")) - logits).abs().max() > 1e-3  # and the adapter is not a no-op


def test_the_full_fine_tune_folder_is_the_trained_model(full_run: Run) -> None:
    from transformers import AutoModelForCausalLM

    folder = full_run.out / "model"
    assert (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    expected = metric_means(full_run.outcome["stages"][0]["eval_after"])
    _assert_metrics_close(_eval_metrics(model, full_run), expected)


@pytest.mark.parametrize("fixture", ["lora_run", "full_run"])
def test_report_files(fixture: str, request: pytest.FixtureRequest) -> None:
    run: Run = request.getfixturevalue(fixture)
    curves = run.out / "curves.png"
    assert curves.read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image

    height, width, _ = matplotlib.image.imread(str(curves)).shape
    assert height > 300 and width > 600

    summary = (run.out / "summary.md").read_text(encoding="utf-8")
    assert "| metric | before | after |" in summary
    after = run.outcome["stages"][0]["eval_after"]
    before = run.outcome["stages"][0]["eval_before"]
    row = next(line for line in summary.splitlines() if line.startswith("| margin |"))
    assert f"{before['margin']['mean']:.4f}" in row and f"{after['margin']['mean']:.4f} ± " in row
    assert "![curves](curves.png)" in summary
    # one line per reported metric says what it means (the names alone do not)
    assert "## What the held-out numbers mean" in summary
    for name in ("accuracy", "margin", "chosen_drift", "likelihood_accuracy", "rewards/chosen"):
        line = next(line for line in summary.splitlines() if line.startswith(f"- `{name}`: "))
        assert len(line) > len(name) + 20

    data = json.loads((run.out / "data_summary.json").read_text(encoding="utf-8"))
    assert data["train"]["format"] == "standard" and data["train"]["rows_read"] == 24
    assert data["eval"]["kept"] == 8
    assert json.loads((run.out / "run_config.json").read_text(encoding="utf-8"))["output_dir"] == str(run.out)
    assert not list(run.out.rglob("events.out.tfevents.*"))  # trackers=[]: no TensorBoard files


def test_on_policy_curves_gain_reward_kl_and_length_panels(tmp_path: Path) -> None:
    """An on-policy stage's curves.png has a third row: the rounds' reward, KL and length."""
    import matplotlib.image

    from preftune.run.report import plot_curves

    history = [{"step": s, "loss": 1.0 / s, "grad_norm": 1.0, "lr": 1e-4} for s in (1, 2, 3)]
    rounds = [{"round": r, "reward_mean": r, "reward_std": 0.5, "kl": 0.1 * r, "mean_length": 10 + r} for r in (0, 1)]
    heights = [
        matplotlib.image.imread(str(plot_curves(history, [], tmp_path / f"{name}.png", "t", rounds=given))).shape[0]
        for name, given in (("offline", ()), ("online", rounds))
    ]
    assert heights[1] == pytest.approx(heights[0] * 3 / 2, rel=0.02)  # 3 rows of panels instead of 2


@pytest.mark.slow
def test_cli_evaluate_reproduces_the_runs_final_evaluation(lora_run: Run, tmp_path: Path) -> None:
    config = load_config(None, lora_run.overrides)
    out = tmp_path / "metrics.json"
    result = run_cli(
        "evaluate",
        f"model.name={lora_run.out / 'model'}",
        f"data.eval={config.data.eval}",
        "data.max_length=64",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr
    assert "adapter off" in result.stdout
    lines = result.stdout.splitlines()
    for name in ("accuracy", "margin", "chosen_drift"):
        assert any(line.startswith(f"{name} ") and " ± " in line and line.endswith("(8)") for line in lines), name
    assert any(line.startswith("chosen_perplexity ") for line in lines)
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["pairs"] == 8
    actual = {k: v["mean"] for k, v in saved["metrics"].items()}
    _assert_metrics_close(actual, metric_means(lora_run.outcome["stages"][0]["eval_after"]))


def test_evaluate_a_full_model_against_a_given_reference_and_against_itself(full_run: Run, tmp_path: Path) -> None:
    # the held-out pairs of the full run are 8 of its training file: write them out as a data file
    config = load_config(None, full_run.overrides)
    eval_pairs = tokenize_inputs(load_examples(config.data), load_tokenizer("tiny-random"), config.data).held_out
    rows = [json.loads(line) for line in Path(config.data.train).read_text(encoding="utf-8").splitlines()]
    held = [rows[pair.origin.row - 1] for pair in eval_pairs]
    data = tmp_path / "held.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in held), encoding="utf-8")

    against_base = evaluate_model(str(full_run.out / "model"), "tiny-random", str(data), max_length=64)
    expected = metric_means(full_run.outcome["stages"][0]["eval_after"])
    _assert_metrics_close({k: v.mean for k, v in against_base.items()}, expected)

    itself = evaluate_model(str(full_run.out / "model"), None, str(data), max_length=64)
    assert itself["margin"].mean == 0 and itself["chosen_drift"].mean == 0 and itself["accuracy"].mean == 0.5
    assert itself["logps/chosen"].mean == pytest.approx(against_base["logps/chosen"].mean, abs=1e-6)
    assert math.isfinite(itself["chosen_perplexity"].mean)
    limited = evaluate_model(str(full_run.out / "model"), None, str(data), max_length=64, limit=5)
    assert limited["accuracy"].count == 5
