"""LD-DPO's ``ld_alpha`` and WPO's ``wpo`` train (issue 24): the trainer computes the reference's per-token
log-probs and WPO's per-token log Σ_v π(v)² when the objective declares it reads them, and a step's loss is the
objective applied to records computed by hand from the model's full logits."""

from __future__ import annotations

import pytest
import torch

from preftune.errors import SpecError
from preftune.modeling import AdapterDisabledReference, apply_lora, load_model, tiny_model_path
from preftune.objectives import PairRecord, SequenceLogProbs, build
from preftune.training.accelerator import make_accelerator
from preftune.training.loop import Trainer
from preftune.training.settings import OptimConfig
from tests.modeling.batches import random_batch
from tests.training.common import DataFiles, model_weights, train, trainer_state
from tests.training.test_trl_terms import offline


def _hand_record(model, batch, collision: bool) -> SequenceLogProbs:
    """``[B, C]`` per-token log-probs (and log Σ_v π(v)²) of ``batch`` from ``model``'s full logits ``[N, L, V]``."""
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1].double()
    logps = torch.log_softmax(logits, -1)
    picked = logps.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)  # [N, L-1]
    squares = torch.logsumexp(2 * logps, -1)  # [N, L-1]
    rows = range(batch.input_ids.shape[0])
    width = int(batch.response_mask.sum(1).max())

    def grid(values: torch.Tensor) -> torch.Tensor:  # [N, L-1] -> left-aligned [B, C, T]
        out = torch.zeros(len(rows), width, dtype=values.dtype)
        for r in rows:
            kept = values[r][batch.response_mask[r, 1:]]
            out[r, : kept.numel()] = kept
        return out.view(batch.group_size, -1, width).transpose(0, 1)

    mask = grid(batch.response_mask[:, 1:].double()) > 0
    return SequenceLogProbs.from_tokens(grid(picked), mask, grid(squares) if collision else None)


@pytest.mark.parametrize(
    "objective", ["dpo(ld_alpha=0.5, beta=0.5)", "dpo(wpo=True)", "nca_pair(ld_alpha=0.3, wpo=True)"]
)
def test_a_step_loss_is_the_objective_on_records_computed_by_hand(objective: str) -> None:
    """LoRA's B is set away from zero, so the policy differs from its reference (the adapters off) and
    ``ld_alpha`` weighs different reference and policy tokens; the step's logged loss is the objective on
    records of per-token log-probs (and WPO's collision log-probs) read from full logits."""
    torch.manual_seed(0)
    model = apply_lora(load_model(tiny_model_path(), dtype="float32"), rank=4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    model.eval()
    built = build(objective)
    reference = AdapterDisabledReference(model)
    trainer = Trainer(
        accelerator=make_accelerator("no", cpu=True),
        model=model,
        objective=built,
        optim=OptimConfig(lr=1e-3, batch_size=3),
        total_steps=1,
        reference=reference,
    )
    batch = random_batch(pairs=3, length=20, vocab=model.config.vocab_size, seed=4)
    policy = _hand_record(model, batch, collision=built.needs_collision)
    with model.disable_adapter():
        ref = _hand_record(model, batch, collision=False)
    record = PairRecord(policy.response(0), policy.response(1), ref.response(0), ref.response(1))
    expected = float(built(record).loss.mean())
    assert abs(float(policy.sum.sum() - ref.sum.sum())) > 1e-3  # the policy is not its reference
    stats = trainer.step([batch])
    assert stats["loss"] == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert stats["skipped"] == 0.0


@pytest.mark.parametrize("objective", ["dpo(ld_alpha=0.5)", "dpo(wpo=True)"])
def test_ld_alpha_and_wpo_train_through_preftune_train(data_files: DataFiles, tmp_path, objective: str) -> None:
    """Offline with LoRA: the reference is live (``auto`` becomes ``adapter`` for ``ld_alpha``), every step
    finite, and the adapters move."""
    out = tmp_path / "run"
    outcome = train([*offline(data_files, out, objective), "save_every=2"])
    stage = outcome["stages"][0]
    assert stage["steps"] == 2 and stage["skipped_steps"] == 0, stage
    history = trainer_state(out, 2)["history"]
    assert all(torch.isfinite(torch.tensor(h["loss/dpo"])) for h in history)
    assert any(float(w.abs().max()) > 0 for n, w in model_weights(out / "model").items() if "lora_B" in n)


def test_ld_alpha_with_a_precomputed_reference_is_refused_before_loading(data_files: DataFiles, tmp_path) -> None:
    with pytest.raises(SpecError, match="a precomputed reference does not hold"):
        train([*offline(data_files, tmp_path / "run", "dpo(ld_alpha=0.5)"), "reference=precomputed"])
    assert not (tmp_path / "run").exists()
