"""Training with the fast layout equals training with the plain one; length-grouped plans are sound."""

from __future__ import annotations

import random
import statistics
from pathlib import Path

import pytest

from preftune.errors import SpecError
from preftune.training.plan import BatchPlan
from tests.training.common import DataFiles, full_overrides, lora_overrides, train, trainer_state


def _history(run_dir: Path, steps: int) -> list[dict]:
    return trainer_state(run_dir, steps)["history"]


@pytest.mark.parametrize("overrides", [lora_overrides, full_overrides])
def test_shared_and_padded_layouts_train_alike(data_files: DataFiles, tmp_path: Path, overrides, monkeypatch) -> None:
    import preftune.data.batcher as batcher  # where build_batch looks pack up

    packed_tokens = {"padded": 0, "shared": 0}
    real_pack = batcher.pack
    runs = {}
    for layout in ("padded", "shared"):

        def counting_pack(*args, layout=layout, **kwargs):
            batch = real_pack(*args, **kwargs)
            packed_tokens[layout] += batch.num_tokens
            return batch

        monkeypatch.setattr(batcher, "pack", counting_pack)
        out = tmp_path / layout
        train(overrides(data_files, out, **{"data.layout": layout, "optim.max_steps": 4, "save_every": 4}))
        runs[layout] = _history(out, 4)
    for plain, fast in zip(runs["padded"], runs["shared"], strict=True):
        for key in ("loss", "margin", "logps/chosen", "logps/rejected", "grad_norm"):
            assert fast[key] == pytest.approx(plain[key], rel=1e-4, abs=1e-4), key
    # the shared run packed its batches (training, reference and evaluation); the padded run never did
    assert packed_tokens["shared"] > 0 and packed_tokens["padded"] == 0


def test_a_wrong_layout_is_refused_before_anything_loads(data_files: DataFiles, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"data\.layout must be one of shared, packed, padded, got 'dense'"):
        train(lora_overrides(data_files, tmp_path / "x", **{"data.layout": "dense"}))
    assert not (tmp_path / "x").exists()


def _plan(lengths: list[int], batch_size: int = 4, seed: int = 0) -> BatchPlan:
    return BatchPlan(len(lengths), batch_size, seed, lengths=tuple(lengths))


def test_length_grouped_plan_visits_every_pair_once_per_epoch() -> None:
    rng = random.Random(1)
    lengths = [rng.randint(10, 500) for _ in range(103)]
    plan = _plan(lengths)
    for epoch in range(3):
        seen = [i for k in range(plan.steps_per_epoch) for i in plan.step_indices(epoch * plan.steps_per_epoch + k)]
        assert len(seen) == len(set(seen)) == plan.steps_per_epoch * 4 == 100
    # deterministic: the step alone fixes the pairs, so a resumed run reads the same ones
    assert all(_plan(lengths).step_indices(s).tolist() == plan.step_indices(s).tolist() for s in range(30))
    assert plan.step_indices(0).tolist() != plan.step_indices(plan.steps_per_epoch).tolist()


def test_length_grouped_batches_waste_less_padding() -> None:
    rng = random.Random(2)
    lengths = [rng.randint(10, 500) for _ in range(400)]

    def padding(plan: BatchPlan) -> float:
        waste = []
        for step in range(plan.steps_per_epoch):
            batch = [lengths[i] for i in plan.step_indices(step).tolist()]
            waste.append(sum(max(batch) - n for n in batch) / (max(batch) * len(batch)))
        return statistics.mean(waste)

    grouped, shuffled = padding(_plan(lengths, 8)), padding(BatchPlan(400, 8, 0))
    assert grouped < 0.05 < 0.2 < shuffled


def test_lengths_must_match_the_data() -> None:
    with pytest.raises(SpecError, match="3 lengths for 4 pairs"):
        BatchPlan(4, 2, lengths=(1, 2, 3))
