"""Every term added for TRL's losses (issue 24) trains through ``preftune train`` on the tiny model: offline pairs,
every pairwise term at once in one on-policy round (pairs formed from the round's samples), and composed with
``exmate`` and ``bcr``."""

from __future__ import annotations

import math

import pytest

from preftune.errors import SpecError
from tests.training.common import DataFiles, model_weights, online_overrides, train, trainer_state

NEW_TERMS = [
    "simpo", "cpo", "orpo", "sigmoid_norm", "robust", "exo_pair", "discopop", "nca_pair", "bco_pair", "sppo_hard",
    "apo_zero", "apo_down", "aot", "aot_unpaired", "simpo(alpha=0.25)", "dpo(divergence='js')",
    "ipo(divergence='alpha', divergence_alpha=0.3)",
]  # fmt: skip


def offline(data: DataFiles, out, objective: str) -> list[str]:
    settings = {
        "model.name": "tiny-random",
        "objective": objective,
        "output_dir": str(out),
        "data.train": str(data.train),
        "data.train_size": 8,
        "data.eval_size": 4,
        "data.max_length": 64,
        "optim.max_steps": 2,
        "optim.lr": 1e-3,
        "trackers": "[]",
    }
    return [f"{k}={v}" for k, v in settings.items()]


def _trained(outcome: dict, steps: int = 2) -> None:
    stage = outcome["stages"][0]
    assert stage["steps"] == steps and stage["skipped_steps"] == 0, stage


@pytest.mark.parametrize("objective", [*NEW_TERMS, "simpo + 0.5*exmate + bcr", "nca_pair + 0.5*exmate + bcr"])
def test_each_term_trains_offline(data_files: DataFiles, tmp_path, objective: str) -> None:
    out = tmp_path / "run"
    outcome = train(offline(data_files, out, objective))
    _trained(outcome)


# Every pairwise term that can run on-policy, in one objective, with LD-DPO's and WPO's per-token values on a dpo
ON_POLICY_TERMS = [
    "simpo", "cpo", "orpo", "sigmoid_norm", "robust", "exo_pair", "discopop", "nca_pair", "bco_pair", "sppo_hard",
    "apo_zero", "apo_down", "aot", "aot_unpaired", "dpo(ld_alpha=0.5, wpo=True)",
]  # fmt: skip


def test_every_term_trains_on_policy_in_one_run(tmp_path) -> None:
    """One on-policy round (every pair of each prompt's samples, read within groups) of the sum of the terms at
    weight 0.1: each term's logged loss is finite at every step, and the adapters move. The ``ld_alpha`` term makes
    the round keep its live reference for the per-token values (no round table)."""
    out = tmp_path / "run"
    objective = " + ".join(f"0.1*{term}" for term in ON_POLICY_TERMS)
    changes = {
        "objective": f"'{objective}'",
        "online.labeller": "length",
        "online.rounds": 1,
        "online.pairing": "all",
        "optim.lr": 1e-2,
    }
    outcome = train(online_overrides(out, changes))
    stage = outcome["stages"][0]
    assert stage["steps"] >= 2 and stage["skipped_steps"] == 0, stage
    history = trainer_state(out, stage["steps"])["history"]
    labels = {term.split("(")[0] for term in ON_POLICY_TERMS}
    for step in history:
        logged = {key.removeprefix("loss/"): value for key, value in step.items() if key.startswith("loss/")}
        assert set(logged) == labels and all(math.isfinite(v) for v in logged.values()), step
    assert any(float(w.abs().max()) > 0 for n, w in model_weights(out / "model").items() if "lora_B" in n)


def test_unpaired_data_takes_the_terms_that_score_responses_alone(data_files: DataFiles, tmp_path) -> None:
    from preftune.cli.config import load_config
    from preftune.run.checks import check

    base = [*offline(data_files, tmp_path / "run", "bco_pair"), f"data.bad={data_files.eval}"]
    check(load_config(None, base))
    with pytest.raises(SpecError, match="compares a chosen and a rejected"):
        check(load_config(None, [*base, "objective=simpo"]))
