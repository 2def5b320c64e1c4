"""Bradley–Terry reward-model training on the tiny model: the loss, the accuracy, saving and determinism."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from preftune.errors import PreftuneError
from preftune.reward import (
    PairAccuracy,
    Prepared,
    RewardModel,
    RewardResult,
    bt_loss,
    evaluate_pairs,
    prepare,
    train_reward_model,
)
from preftune.reward.data import encode_completions, sequences
from preftune.reward.model import score_rows
from tests.reward.conftest import tiny_config


def test_bt_loss_is_the_hand_computed_mean() -> None:
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0]), torch.tensor([1.0, 0.0, 1.0])
    # margins 1, 0, -2: -log sigma(m) = log(1 + e^-m)
    expected = (math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(2))) / 3
    assert float(bt_loss(chosen, rejected)) == pytest.approx(expected, rel=1e-6)
    assert float(bt_loss(chosen, rejected)) == pytest.approx(1.0444, abs=1e-4)  # (0.3133 + 0.6931 + 2.1269) / 3


def test_accuracy_counts_ties_half_with_its_standard_error() -> None:
    result = PairAccuracy.of([1.0, 0.5, 2.0, 0.0], [0.0, 0.5, 3.0, -1.0])  # win, tie, loss, win
    assert result.accuracy == pytest.approx(0.625) and result.pairs == 4
    assert result.stderr == pytest.approx(math.sqrt(0.625 * 0.375 / 4))
    assert result.margin == pytest.approx((1 + 0 - 1 + 1) / 4)
    assert math.isnan(PairAccuracy.of([], []).accuracy)


def test_training_lowers_the_loss_and_raises_accuracy(trained: tuple[Prepared, RewardResult]) -> None:
    prepared, result = trained
    assert len(prepared.train) == 28 and len(prepared.held_out) == 12
    assert result.after.loss < result.before.loss and result.after.accuracy > result.before.accuracy
    assert result.after.accuracy == 1.0 and result.after.margin > 1.0
    assert result.epoch_losses[-1] < result.epoch_losses[0]
    on_train = evaluate_pairs(result.model, prepared.train, prepared.tokenizer.pad_token_id, 16)
    assert on_train.accuracy == 1.0
    saved = json.loads((result.output_dir / "metrics.json").read_text())
    assert saved["held_out_after"]["accuracy"] == 1.0 and saved["train_pairs"] == 28
    assert saved["held_out_before"]["accuracy"] == pytest.approx(result.before.accuracy)


def test_bf16_autocast_trains_too(marker_pairs: Path, tmp_path: Path) -> None:
    """``precision=bf16`` (what ``auto`` picks on a CPU with AMX or AVX-512 BF16) still learns the marker."""
    result = train_reward_model(prepare(tiny_config(marker_pairs, tmp_path / "rm", precision="bf16")), save=False)
    assert result.epoch_losses[-1] < result.epoch_losses[0] and result.after.accuracy > result.before.accuracy
    with pytest.raises(PreftuneError, match="precision"):
        prepare(tiny_config(marker_pairs, tmp_path / "rm2", precision="fp8"))


def test_saved_folder_loads_with_transformers_and_scores_alike(trained: tuple[Prepared, RewardResult]) -> None:
    prepared, result = trained
    chosen, rejected = sequences(prepared.held_out)
    pad = prepared.tokenizer.pad_token_id
    in_memory = score_rows(result.model, chosen + rejected, pad, 8)
    loaded = AutoModelForSequenceClassification.from_pretrained(result.output_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir)
    assert loaded.config.num_labels == 1 and loaded.config.pad_token_id == tokenizer.pad_token_id == pad
    # a reward model's scores have no fixed scale (~10 here): float32 rounding relative to their size
    assert score_rows(loaded, chosen + rejected, pad, 8) == pytest.approx(in_memory, rel=1e-5, abs=1e-4)
    # the scorer renders prompt + completion as training rendered the chosen rows
    examples = [(p.prompt, p.chosen[0]["content"]) for p in _held_out_examples(prepared)]
    scorer = RewardModel(result.output_dir, batch_size=5)
    assert scorer.encode([p for p, _ in examples], [c for _, c in examples]) == chosen
    assert scorer.score([p for p, _ in examples], [c for _, c in examples]) == pytest.approx(
        in_memory[: len(chosen)], rel=1e-5, abs=1e-4
    )


def _held_out_examples(prepared: Prepared):
    from preftune.reward.data import load_pairs

    return load_pairs(prepared.config.data).held_out


def test_training_is_deterministic_given_the_seed(marker_pairs: Path, tmp_path: Path) -> None:
    def run(seed: int) -> list[float]:
        config = tiny_config(marker_pairs, tmp_path / f"x{seed}", epochs=1, seed=seed, lora=False, lr=1e-3)
        config.data.train_size = 8
        return train_reward_model(prepare(config), save=False).epoch_losses

    first = run(0)
    assert run(0) == first and run(1) != first


def test_scorer_refuses_a_model_without_a_reward_head() -> None:
    with pytest.raises(PreftuneError, match="no reward head"):
        RewardModel("tiny-random")


def test_encode_refuses_mismatched_lists(trained: tuple[Prepared, RewardResult]) -> None:
    with pytest.raises(PreftuneError, match="2 prompts but 1 completions"):
        encode_completions(trained[0].tokenizer, ["a", "b"], ["x"], 64)


def test_settings_are_refused_before_anything_loads(marker_pairs: Path, tmp_path: Path) -> None:
    with pytest.raises(PreftuneError, match="lr must be"):
        prepare(tiny_config(marker_pairs, tmp_path / "o", lr=0.0))
    with pytest.raises(PreftuneError, match="lora_last_layers must be"):
        prepare(tiny_config(marker_pairs, tmp_path / "o", lora_last_layers=0))
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("x")
    with pytest.raises(PreftuneError, match="not empty"):
        prepare(tiny_config(marker_pairs, tmp_path / "used"))
