"""Offline training on ranked groups (P3's offline half) and on unpaired good/bad sets (P1), through
``preftune train``'s own entry (:func:`preftune.run.train.run_training`) on the tiny model.

The data are real: OpenAssistant message trees (``tests/data/files.py``'s ``SHARED``), whose ranked replies become
groups of C = 3 completions with reward −rank. Each run's first step is checked against the
objective computed by hand on the examples the plan gives that step (the LoRA policy starts as its
base model, so the tiny model as loaded scores it): the rewards, the grouping and the objective
all reach the trainer as they should. Pairwise objectives with ``data.pairing=all`` read every pair
within each group of any size, each completion forwarded once: the same per-pair losses as the
pairs built as items.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from preftune.cli.config import load_config
from preftune.data import Batcher, TokenizedPair
from preftune.errors import PreftuneError
from preftune.modeling import load_model, load_tokenizer, response_logprobs
from preftune.objectives import WithinGroups, build, record_for
from preftune.run.inputs import data_kind, load_examples, objective_for_inputs, tokenize_inputs
from preftune.run.train import run_training
from preftune.training.loop import make_plan, responses_read
from tests.data.files import OASST_FILE
from tests.training.common import assert_same_tensors, model_weights, trainer_state, write_jsonl

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
    objective = objective_for_inputs(build(config.objective), inputs.train, config.data)
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


def test_pairs_within_ranked_groups_forward_each_completion_once_for_the_same_losses() -> None:
    """``data.pairing=all`` with a pairwise objective on ranked data: groups of 2-4 completions (padded
    to the widest), each forwarded once; DPO's loss of every pair equals the loss of the same pair
    built as an item and forwarded on its own, in the pair loader's order."""
    config = load_config(None, [*BASE, "objective=dpo", "data.pairing=all"])
    assert data_kind(config) == "pairs_within"
    tokenizer = load_tokenizer("tiny-random")
    inputs = tokenize_inputs(load_examples(config.data, "pairs_within"), tokenizer, config.data)
    objective = objective_for_inputs(build("dpo"), inputs.train, config.data)
    assert isinstance(objective, WithinGroups)
    groups = inputs.train[:6]
    real = [sum(1 for r in g.rewards if r == r) for g in groups]  # NaN rewards: the padding
    assert len(set(real)) > 1 and {g.num_responses for g in groups} == {max(g.num_responses for g in inputs.train)}
    pairs = [
        TokenizedPair(g.prompt_ids, g.responses[i], g.responses[j], g.origin)
        for g in groups
        for i in range(len(g.responses))
        for j in range(len(g.responses))
        if g.rewards[i] > g.rewards[j]  # NaN compares false: the padding pairs with nothing
    ]
    policy, reference = load_model("tiny-random"), load_model("tiny-random")
    torch.manual_seed(0)
    with torch.no_grad():
        for param in reference.parameters():
            param.add_(0.02 * torch.randn_like(param))
    batcher = Batcher(tokenizer.pad_token_id, "shared")

    def losses(items, objective, group_size):
        batch = batcher(items, torch.arange(len(items)), group_size=group_size)
        with torch.no_grad():
            record = record_for(
                objective.record_type,
                response_logprobs(policy, batch, with_tokens=False),
                response_logprobs(reference, batch, with_tokens=False),
                batch.rewards,
            )
        return objective(record).loss, batch.num_tokens

    within, within_tokens = losses(groups, objective, None)
    as_items, item_tokens = losses(pairs, build("dpo"), 2)
    assert within.shape == as_items.shape == (len(pairs),) and len(pairs) > len(groups)
    assert torch.allclose(within, as_items, rtol=1e-4, atol=1e-5)
    assert within.std() > 1e-3  # the reference differs: the losses are not all log 2
    # the shared layout forwards each example's prompt once and each of its responses once
    forwarded = lambda items: sum(len(g.prompt_ids) + sum(map(len, g.responses)) for g in items)  # noqa: E731
    assert (within_tokens, item_tokens) == (forwarded(groups), forwarded(pairs))
    assert within_tokens < item_tokens


def test_pairs_within_reads_the_training_file_once_when_it_detects_its_format(monkeypatch) -> None:
    """``data.format=auto``: the rows read to see that the data are ranked are the rows the groups come from."""
    import preftune.data.grouped as grouped
    import preftune.run.inputs as inputs_module

    reads: list[str] = []
    real = grouped.load_rows

    def counted(source, *args, **kwargs):
        reads.append(str(source))
        return real(source, *args, **kwargs)

    monkeypatch.setattr(grouped, "load_rows", counted)
    monkeypatch.setattr(inputs_module, "load_rows", counted)
    config = load_config(None, [*BASE, "objective=dpo", "data.pairing=all"])
    auto = load_examples(config.data, "pairs_within")
    assert reads == [str(OASST_FILE)]
    named = load_examples(
        load_config(None, [*BASE, "objective=dpo", "data.pairing=all", "data.format=oasst"]).data, "pairs_within"
    )
    assert [g.rewards for g in auto.train] == [g.rewards for g in named.train] and len(auto.held_out) == len(
        named.held_out
    )


def test_pairs_within_groups_train_alike_in_one_batch_or_in_micro_batches(tmp_path: Path) -> None:
    """Groups of 2-4 ranked replies hold different numbers of pairs, so the two micro-batches of a
    step (``optim.grad_accumulation=2``) hold different numbers too: the step still minimises the
    mean over all its pairs, as one batch does (gradient norms, losses and weights alike), not the
    mean of the micro-batches' means."""
    base = [*BASE, "objective=dpo", "data.pairing=all", "optim.max_steps=3", "data.eval_size=0"]
    config = load_config(None, base)
    inputs = tokenize_inputs(load_examples(config.data, "pairs_within"), load_tokenizer("tiny-random"), config.data)
    plan = make_plan(inputs.train, replace(config.optim, grad_accumulation=2), 1, False)
    pairs = [
        [sum(a > b for a in inputs.train[i].rewards for b in inputs.train[i].rewards) for i in m.tolist()]
        for m in plan.micro_batches(0, rank=0)
    ]
    assert sum(pairs[0]) != sum(pairs[1]), pairs  # the test means something only then
    runs = {}
    for accumulation in (1, 2):
        out = tmp_path / f"ga{accumulation}"
        run_training(load_config(None, [*base, f"optim.grad_accumulation={accumulation}", f"output_dir={out}"]))
        runs[accumulation] = out
    one, two = (trainer_state(runs[k], 3)["history"] for k in (1, 2))
    for a, b in zip(one, two, strict=True):
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-5)
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6)
    # Adam divides each entry's step by its own gradient's size, so float rounding on an entry whose
    # gradient is near 0 moves it by a fraction of a step (lr 5e-3; 1.3e-6 seen on an AMD EPYC Zen 4):
    # 1/500 of a step allowed
    assert_same_tensors(model_weights(runs[2] / "model"), model_weights(runs[1] / "model"), atol=1e-5)
