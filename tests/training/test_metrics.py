"""The per-step history: every term's loss, rewards, margin, accuracy, chosen drift, gradient norm,
learning rate and throughput; and the learning rate follows the configured warm-up then decay."""

from __future__ import annotations

import math

import pytest

from preftune.cli.config import load_config
from tests.training.common import Run, trainer_state

KEYS = {
    "loss",
    "loss/dpo",
    "loss/exmate",
    "rewards/chosen",
    "rewards/rejected",
    "margin",
    "accuracy",
    "chosen_drift",
    "logps/chosen",
    "logps/rejected",
    "likelihood_accuracy",
    "grad_norm",
    "lr",
    "tokens_per_s",
    "step_s",
    "skipped",
    "step",
}


def test_history_has_every_metric_of_every_step(lora_run: Run) -> None:
    history = trainer_state(lora_run.out, 6)["history"]
    assert [h["step"] for h in history] == [1, 2, 3, 4, 5, 6]
    for h in history:
        assert set(h) == KEYS
        assert all(math.isfinite(v) for v in h.values())
        assert h["skipped"] == 0 and h["tokens_per_s"] > 0 and h["step_s"] > 0 and h["grad_norm"] > 0
        assert 0 <= h["accuracy"] <= 1 and 0 <= h["likelihood_accuracy"] <= 1
        # the loss is the sum of its terms (weights 1), and the margin is β⁻¹ times the reward gap
        assert h["loss"] == pytest.approx(h["loss/dpo"] + h["loss/exmate"], rel=1e-5)
        assert h["rewards/chosen"] - h["rewards/rejected"] == pytest.approx(0.1 * h["margin"], rel=1e-4, abs=1e-6)
    # before any update the policy is its reference; training then moves it apart
    # Step 1's policy is its reference, scored in another packing: equal to float32 rounding of what is
    # subtracted, sums of ~20 tokens' log-probs for the margin, per-token means for the drift.
    per_token = abs(history[0]["logps/chosen"])
    assert history[0]["margin"] == pytest.approx(0, abs=1e-6 * 20 * per_token)
    assert history[0]["chosen_drift"] == pytest.approx(0, abs=1e-6 * per_token)
    assert history[0]["accuracy"] == 0.5
    assert history[-1]["margin"] > 1 and history[-1]["accuracy"] > 0.5


def test_learning_rate_warms_up_then_decays_as_configured(lora_run: Run) -> None:
    config = load_config(None, lora_run.overrides)
    peak, total = config.optim.lr, config.optim.max_steps
    warmup = math.ceil(config.optim.warmup_ratio * total)
    assert config.optim.schedule == "cosine" and warmup == 3

    def expected(k: int) -> float:  # the rate of the (k+1)-th step
        if k < warmup:
            return peak * k / warmup
        return peak * 0.5 * (1 + math.cos(math.pi * (k - warmup) / (total - warmup)))

    lrs = [h["lr"] for h in trainer_state(lora_run.out, total)["history"]]
    assert lrs == pytest.approx([expected(k) for k in range(total)], rel=1e-9, abs=1e-12)
    assert lrs[:4] == sorted(lrs[:4]) and lrs[3] == pytest.approx(peak)  # up to the peak
    assert lrs[3:] == sorted(lrs[3:], reverse=True) and lrs[-1] < peak / 2  # then down


def test_held_out_evaluations_before_and_after(lora_run: Run) -> None:
    stage = lora_run.outcome["stages"][0]
    before, after = stage["eval_before"], stage["eval_after"]
    assert (before["step"], after["step"]) == (0, 6)
    assert before["margin"]["mean"] == 0 and before["accuracy"]["mean"] == 0.5 and before["chosen_drift"]["mean"] == 0
    assert after["accuracy"]["count"] == 8 and after["margin"]["stderr"] > 0
    assert after["chosen_perplexity"]["mean"] == pytest.approx(math.exp(-after["logps/chosen"]["mean"]), rel=0.5)
