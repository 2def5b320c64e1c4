"""Offline training on ranked groups (P3's offline half) and on unpaired good/bad sets (P1), through
``preftune train``'s own entry (:func:`preftune.run.train.run_training`) on the tiny model.

The data are real: OpenAssistant message trees (``tests/data/files.py``'s ``SHARED``), whose ranked replies become
groups of C = 3 completions with reward −rank. Each run's first step is checked against the
objective computed by hand on the examples the plan gives that step (the LoRA policy starts as its
base model, so the tiny model as loaded scores it): the rewards, the grouping and the objective
all reach the trainer as they should. Pairwise objectives train on pairs formed from the ranks.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preftune.cli.config import load_config
from preftune.data import Batcher
from preftune.errors import PreftuneError
from preftune.modeling import load_model, load_tokenizer, response_logprobs
from preftune.objectives import build, record_for
from preftune.run.inputs import data_kind, load_examples, tokenize_inputs
from preftune.run.train import run_training
from preftune.training.loop import make_plan, responses_read
from tests.data.files import OASST_FILE
from tests.training.common import model_weights, trainer_state, write_jsonl

BASE = [
    "model.name=tiny-random",
    f"data.train={OASST_FILE}",
    "data.eval_size=8",
    "data.max_length=96",
    "optim.batch_size=4",
    "optim.max_steps=2",
    "optim.lr=5e-3",
    "trackers=[]",
    "lora.rank=4",
    "optim.mixed_precision=no",
]
GROUPS = ["data.group_size=3"]


def first_step_loss_by_hand(overrides: list[str]) -> float:
    """The objective on the examples of step 1, computed outside the trainer (the policy at step 0 is the base)."""
    config = load_config(None, overrides)
    tokenizer = load_tokenizer("tiny-random")
    inputs = tokenize_inputs(load_examples(config.data, data_kind(config)), tokenizer, config.data)
    objective = build(config.objective)
    indices = make_plan(inputs.train, config.optim, 1, False).step_indices(0)
    batch = Batcher(tokenizer.pad_token_id, "padded")(
        [inputs.train[i] for i in indices.tolist()], indices, group_size=responses_read(objective)
    )
    model = load_model("tiny-random")
    with torch.no_grad():
        policy = response_logprobs(model, batch, with_tokens=objective.needs_token_logps)
        reference = response_logprobs(model, batch, with_tokens=False) if objective.needs_reference else None
    return float(objective(record_for(objective.record_type, policy, reference, batch.rewards)).loss.mean())


@pytest.mark.parametrize(
    "extra",
    [
        [*GROUPS, "objective=reinforce"],
        [*GROUPS, "objective=rwr"],
        [*GROUPS, "objective=bon"],
        [*GROUPS, "objective=bon_neg"],
        ["objective=dpo", "data.pairing=all", "data.score_gap=1"],  # pairs of ranks at least 2 apart
    ],
    ids=["reinforce", "rwr", "bon", "bon_neg", "dpo-ranked-pairs"],
)
def test_ranked_groups_train_offline(tmp_path: Path, extra: list[str]) -> None:
    overrides = [*BASE, *extra, f"output_dir={tmp_path / 'run'}"]
    outcome = run_training(load_config(None, overrides))
    history = outcome["stages"][0]
    assert history["steps"] == 2 and history["skipped_steps"] == 0
    first = trainer_state(tmp_path / "run", 2)["history"][0]
    assert first["loss"] == pytest.approx(first_step_loss_by_hand(overrides), rel=1e-4, abs=1e-5)
    weights = model_weights(tmp_path / "run" / "model")
    assert any(float(w.abs().max()) > 0 for n, w in weights.items() if "lora_B" in n)  # LoRA B starts at zero
    assert "accuracy" in history["eval_after"]  # held-out groups scored as best-vs-worst pairs
    if "objective=dpo" not in extra:
        assert "reward_mean" in first or any(k.startswith("reward") for k in first), first.keys()


def test_unpaired_good_and_bad_sets_train_with_likelihood_terms(tmp_path: Path) -> None:
    good = write_jsonl(
        tmp_path / "good.jsonl", [{"prompt": f"Say {i}.", "completion": f"{i} it is."} for i in range(24)]
    )
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": f"Name {i}.", "completion": f"No {i}!"} for i in range(30)])
    overrides = [
        "model.name=tiny-random",
        f"data.train={good}",
        f"data.bad={bad}",
        "data.eval_size=4",
        "optim.batch_size=4",
        "optim.max_steps=2",
        "trackers=[]",
        "objective=mle + exmate",
        "optim.mixed_precision=no",
        f"output_dir={tmp_path / 'run'}",
    ]
    outcome = run_training(load_config(None, overrides))
    assert outcome["stages"][0]["steps"] == 2
    first = trainer_state(tmp_path / "run", 2)["history"][0]
    assert first["loss"] == pytest.approx(first_step_loss_by_hand(overrides), rel=1e-4, abs=1e-5)
    assert "logps/rejected" in first and "margin" not in first  # no reference-based pair statistics


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["objective=dpo", "data.bad=x.jsonl"], "data.bad gives unpaired examples"),
        (["objective=reinforce", "data.bad=x.jsonl"], "data.bad gives unpaired examples"),
        (["objective=dpo", "data.group_size=3"], "data.group_size is for group objectives"),
        (["stages=[{name: a, objective: bon}, {name: b, objective: dpo}]"], "stages mix group objectives"),
    ],
)
def test_objectives_that_do_not_fit_the_data_are_refused_before_loading(tmp_path, extra, message) -> None:
    with pytest.raises(PreftuneError, match=message):
        run_training(load_config(None, [*BASE, *extra, f"output_dir={tmp_path / 'run'}"]))
    assert not (tmp_path / "run").exists()


def test_group_objective_on_pairs_is_refused_in_one_line(tmp_path: Path) -> None:
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}] * 4)
    with pytest.raises(PreftuneError, match="ranked completions"):
        run_training(
            load_config(
                None,
                [*BASE[:1], f"data.train={pairs}", "objective=bon", "trackers=[]", f"output_dir={tmp_path / 'run'}"],
            )
        )
