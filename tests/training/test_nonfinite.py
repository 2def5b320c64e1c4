"""Non-finite losses: a step whose loss is NaN is skipped with a warning and changes nothing;
``max_bad_steps`` of them in a row stop the run with one clear error and a checkpoint that a
resumed run continues from as if nothing had happened.

The NaN comes from a user-defined objective term registered through
``preftune.objectives.register`` (:mod:`tests.training.terms`), not from a mocked model.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from preftune.errors import PreftuneError
from preftune.training.checkpoint import latest_checkpoint
from tests.training import terms
from tests.training.common import (
    DataFiles,
    Run,
    assert_same_tensors,
    checkpoint_weights,
    lora_overrides,
    model_weights,
    train,
    trainer_state,
)


def _poisoned(overrides: list[str], first: int, last: int, **settings: object) -> list[str]:
    objective = f"objective=dpo + exmate + nan_at(first={first}, last={last})"
    return [*overrides, objective, *(f"{k}={v}" for k, v in settings.items())]


def _config(data: DataFiles, out: Path, first: int, last: int, max_bad_steps: int) -> list[str]:
    # a checkpoint after every step, all kept: the weights after each step can be compared
    overrides = lora_overrides(data, out, save_every=1, keep_checkpoints=10, **{"optim.max_bad_steps": max_bad_steps})
    return _poisoned(overrides, first, last)


@pytest.fixture(scope="module")
def skipping_run(data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Steps 4 and 5 NaN, ``max_bad_steps`` 3: both skipped, the run goes on."""
    out = tmp_path_factory.mktemp("skipping") / "run"
    overrides = _config(data_files, out, first=4, last=5, max_bad_steps=3)
    terms.STATE["step"] = 1
    with pytest.warns(UserWarning) as caught:
        outcome = train(overrides, callbacks=[terms.track_step])
    messages = [str(w.message) for w in caught]
    for step in (4, 5):
        assert f"step {step}: non-finite loss or gradient; the step was skipped" in messages
    return Run(out, overrides, outcome)


def test_nan_steps_are_skipped_and_change_no_weight(skipping_run: Run) -> None:
    out = skipping_run.out
    assert skipping_run.outcome["stages"][0]["skipped_steps"] == 2
    history = trainer_state(out, 6)["history"]
    assert [h["skipped"] for h in history] == [0, 0, 0, 1, 1, 0]
    for h in history[3:5]:
        assert math.isnan(h["loss"]) and math.isnan(h["loss/nan_at"]) and math.isnan(h["grad_norm"])
    weights = {step: checkpoint_weights(out, step) for step in range(1, 7)}
    assert_same_tensors(weights[4], weights[3])
    assert_same_tensors(weights[5], weights[3])
    for step in (2, 3, 6):  # every good step moved the weights (step 1 runs at lr 0, the warm-up's start)
        assert any(not torch.equal(weights[step][n], weights[step - 1][n]) for n in weights[step]), step
    assert all(torch.isfinite(t).all() for t in weights[6].values())
    # nor did the schedule advance: steps 5 and 6 ran at the rate step 4 would have had
    assert history[3]["lr"] == history[4]["lr"] == history[5]["lr"] > 0


def test_max_bad_steps_in_a_row_stop_with_a_usable_checkpoint(
    data_files: DataFiles, skipping_run: Run, out_dir: Path
) -> None:
    terms.STATE["step"] = 1
    with pytest.warns(UserWarning, match="step 5: non-finite"), pytest.raises(PreftuneError) as stopped:
        train(_config(data_files, out_dir, first=4, last=5, max_bad_steps=2), callbacks=[terms.track_step])
    message = str(stopped.value)
    assert "2 non-finite steps in a row at step 5: stopped" in message
    assert "\n" not in message and str(out_dir / "checkpoints" / "step-000005") in message

    # the newest checkpoint holds the last good weights (those after step 3) and the history so far
    checkpoint = latest_checkpoint(out_dir)
    assert checkpoint is not None and checkpoint.name == "step-000005"
    assert_same_tensors(checkpoint_weights(out_dir, 5), checkpoint_weights(skipping_run.out, 3))
    assert [h["step"] for h in trainer_state(out_dir, 5)["history"]] == [1, 2, 3, 4, 5]

    # usable: resumed as it was (a changed objective would be refused; the fault was at steps 4-5 only),
    # the run ends exactly as the run that skipped the same steps
    terms.STATE["step"] = 6
    resumed = [*_config(data_files, out_dir, first=4, last=5, max_bad_steps=2), "resume=true"]
    outcome = train(resumed, callbacks=[terms.track_step])
    assert outcome["stages"][0]["steps"] == 6
    assert [h["step"] for h in trainer_state(out_dir, 6)["history"]] == [1, 2, 3, 4, 5, 6]
    assert_same_tensors(model_weights(out_dir / "model"), model_weights(skipping_run.out / "model"))
