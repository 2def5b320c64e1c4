"""Every term added for TRL's losses (issue 24) trains through ``preftune train`` on the tiny model: offline pairs,
on-policy rounds (pairs formed from each round's samples), and composed with ``exmate`` and ``bcr``."""

from __future__ import annotations

import pytest

from preftune.errors import SpecError
from tests.training.common import DataFiles, online_overrides, train

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
        "optim.batch_size": 4,
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


@pytest.mark.parametrize("objective", ["simpo + 0.5*exmate", "robust + bcr", "aot"])
def test_terms_train_on_policy(tmp_path, objective: str) -> None:
    out = tmp_path / "run"
    changes = {"objective": f"'{objective}'", "online.labeller": "length", "online.rounds": 1}
    outcome = train(online_overrides(out, changes))
    assert outcome["stages"][0]["steps"] >= 1 and outcome["stages"][0]["skipped_steps"] == 0


def test_unpaired_data_takes_the_terms_that_score_responses_alone(data_files: DataFiles, tmp_path) -> None:
    from preftune.cli.config import load_config
    from preftune.run.checks import check

    base = [*offline(data_files, tmp_path / "run", "bco_pair"), f"data.bad={data_files.eval}"]
    check(load_config(None, base))
    with pytest.raises(SpecError, match="compares a chosen and a rejected"):
        check(load_config(None, [*base, "objective=simpo"]))
