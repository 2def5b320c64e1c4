"""P3's sequence bandit (Tajwar et al. 2024, docs/methods.md §7): environment, transformer policy, records, training."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from preftune.cli.main import main
from preftune.errors import SpecError
from preftune.lab.sequence_bandit import (
    SequenceBanditConfig,
    SequencePolicy,
    make_record,
    make_sequence_bandit,
    run_sequence_bandit,
    samples_drawn,
    sequence_logprobs,
    train,
    true_reward,
)
from preftune.objectives import GroupRecord, PairRecord, build

# A small budget on which on-policy dpo must beat offline bon on the far peak (see the test).
SMALL = SequenceBanditConfig(peak="far", steps=120, seeds=3, length=2, lr=3e-3, eval_every=40)
TINY = SequenceBanditConfig(length=2, contexts=3, steps=4, seeds=2, eval_every=2)


def test_reference_and_rewards_are_the_bandits_in_ten_bins() -> None:
    config = SequenceBanditConfig()
    bandit = make_sequence_bandit(config)
    assert bandit.reference.shape == (10,) and abs(float(bandit.reference.sum()) - 1) < 1e-12
    assert bool((bandit.reference > 0).all())
    assert int(bandit.rewards.argmax()) == 7 and float(bandit.reference[7]) < 0.05  # far: little reference mass
    near = make_sequence_bandit(dataclasses.replace(config, peak="near"))
    assert int(near.rewards.argmax()) == int(near.reference[1:-1].argmax()) + 1  # near: ρ's interior mode
    assert bandit.sequences.shape == (10**3, 3) and bandit.prompts.tolist() == list(range(10, 18))
    y = bandit.sequences[537]
    assert y.tolist() == [5, 3, 7]
    # a row of a batched mean against the mean of one row: equal to float64 rounding, whatever the kernel
    assert float(bandit.sequence_rewards[537]) == pytest.approx(float(bandit.rewards[y].mean()), rel=1e-12)


def test_policy_starts_exactly_at_the_reference() -> None:
    config = SequenceBanditConfig(length=3, contexts=4)
    bandit = make_sequence_bandit(config)
    policy = SequencePolicy(bandit.reference, config, (0, 1))
    inputs = torch.randint(0, 14, (2, 5, 3))
    logprobs = policy(inputs)
    assert torch.equal(logprobs, bandit.reference_logprobs.expand_as(logprobs))  # exactly, at every prefix
    exact = sequence_logprobs(policy, bandit)  # [M, K, V^L]
    assert torch.allclose(exact.double().exp().sum(-1), torch.ones(2, 4, dtype=torch.float64), atol=1e-5, rtol=0)
    # π_ref(y) = Π_t ρ(y_t), so E[mean_t r_tok(y_t)] = Σ_v ρ(v)·r_tok(v).
    expected = float(bandit.reference @ bandit.rewards)
    assert true_reward(exact, bandit).tolist() == pytest.approx([expected, expected], abs=1e-6)


def test_enumeration_sums_to_one_after_training_too() -> None:
    bandit = make_sequence_bandit(TINY)
    run = train(bandit, build("reinforce"), "on_policy", TINY, (0, 1))
    assert run.rewards.shape == (2, 3) and run.marginals.shape == (2, 4, 10)
    assert torch.allclose(run.marginals.sum(-1), torch.ones(2, 4, dtype=torch.float64), atol=1e-5)
    assert run.rewards[0, 0] == pytest.approx(float(bandit.reference @ bandit.rewards), abs=1e-6)
    assert bool((run.rewards[:, -1] != run.rewards[:, 0]).all())  # and it moves


@pytest.mark.parametrize("method", ["reinforce", "bon", "dpo"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_records_are_multi_token_and_sum_to_the_sequence_logprob(method: str, seed: int) -> None:
    config = SequenceBanditConfig(length=3, contexts=2, samples_per_context=5)
    bandit = make_sequence_bandit(config)
    policy = SequencePolicy(bandit.reference, config, (seed,))
    with torch.no_grad():  # move the policy off π_ref, so that the check is not trivial
        policy.head.normal_(generator=torch.Generator().manual_seed(seed))
    generator = [torch.Generator().manual_seed(seed)]
    responses = policy.sample(bandit.prompts, 5, 3, generator)  # [1, K, C, L]
    tokens = policy.token_logprobs(bandit.prompts, responses)
    assert tokens.shape == (1, 2, 5, 3)
    exact = sequence_logprobs(policy, bandit)[0]  # [K, V^L]
    rows = (responses[0] * torch.tensor([100, 10, 1])).sum(-1)  # [K, C] lexicographic index
    assert torch.allclose(tokens[0].sum(-1), exact.gather(-1, rows), atol=1e-5, rtol=0)
    record = make_record(build(method), tokens, bandit, responses)
    if isinstance(record, GroupRecord):
        assert record.samples.tokens is not None and record.samples.tokens.shape == (2, 5, 3)
        assert torch.equal(record.samples.sum, tokens[0].sum(-1))
        assert torch.equal(record.rewards, bandit.sequence_rewards[rows])
        assert record.ref is not None and torch.equal(record.ref.sum, bandit.reference_logprobs[responses[0]].sum(-1))
    else:
        assert isinstance(record, PairRecord) and record.chosen.tokens is not None
        assert record.chosen.tokens.shape == (2, 3) and record.rejected is not None
        r = bandit.sequence_rewards[rows]
        best, worst = r.argmax(-1), r.argmin(-1)
        assert torch.equal(record.chosen.sum, tokens[0].sum(-1).gather(-1, best[:, None])[:, 0])
        assert torch.equal(record.rejected.sum, tokens[0].sum(-1).gather(-1, worst[:, None])[:, 0])


def test_on_policy_dpo_beats_offline_bon_on_the_far_peak_for_every_seed() -> None:
    """P3's headline on the far peak, per seed: offline bon can only imitate the best of C reference
    responses, whose tokens rarely land near 7, while on-policy dpo follows its own samples there."""
    bandit = make_sequence_bandit(SMALL)
    initial = float(bandit.reference @ bandit.rewards)
    seeds = tuple(range(SMALL.seeds))
    dpo = train(bandit, build("dpo"), "on_policy", SMALL, seeds).rewards[:, -1]
    bon = train(bandit, build("bon"), "offline", SMALL, seeds).rewards[:, -1]
    assert bool((dpo > SMALL.threshold).all()) and SMALL.threshold > initial, dpo
    assert bool((dpo > bon + 0.2).all()), (dpo, bon)


def test_run_summarises_every_method_and_regime_at_the_evaluated_steps() -> None:
    result = run_sequence_bandit(dataclasses.replace(TINY, methods=("bon_neg", "ipo"), snapshots=3))
    assert [(c.method, c.regime) for c in result.curves] == [
        ("bon_neg", "offline"),
        ("bon_neg", "on_policy"),
        ("ipo", "offline"),
        ("ipo", "on_policy"),
    ]
    assert TINY.eval_steps() == (0, 2, 4)
    assert all(c.rewards.shape == (2, 3) and c.histograms.shape == (3, 10) for c in result.curves)
    assert samples_drawn(TINY, "on_policy").tolist() == [0, 2 * 12, 4 * 12]
    rows = result.summary()
    assert len(rows) == 4 and all(r.seeds == 2 for r in rows)
    low = dataclasses.replace(result, config=dataclasses.replace(TINY, threshold=1e-9)).summary()
    assert all(r.steps_to_threshold == 0 for r in low)
    payload = result.to_json()
    assert payload["eval_steps"] == [0, 2, 4] and len(payload["curves"]) == 4
    assert json.loads(json.dumps(payload))["config"]["length"] == 2


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"methods": ("dpo", "bonn")}, "did you mean 'bon'"),
        ({"regimes": ("online",)}, "unknown regime"),
        ({"peak": "middle"}, "peak must be one of"),
        ({"samples_per_context": 1}, "samples_per_context must be an integer ≥ 2"),
        ({"length": 0}, "length must be"),
        ({"vocab": 2}, "vocab must be"),
        ({"eval_every": 0}, "eval_every must be"),
        ({"heads": 3}, "divisible by heads"),
        ({"width": 0.0}, "width must be"),
        ({"lr": float("nan")}, "lr must be"),
        ({"length": 7}, "too many to enumerate"),
    ],
)
def test_config_refuses_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        SequenceBanditConfig(**changes)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["peak=middle"], "peak=middle: expected one of far, near"),
        (["methods=dpo,bonn"], "did you mean 'bon'"),
        (["length=0"], "length must be"),
        (["regimes=online"], "unknown regime"),
    ],
)
def test_cli_refuses_bad_options_with_one_line(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["lab", "sequence-bandit", *args, f"out={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_cli_run_prints_the_table_and_writes_png_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lab"
    args = ["peak=near", "methods=[dpo, rwr]", "seeds=2", "optim.max_steps=4", "length=2"]
    assert main(["lab", "sequence-bandit", *args, "eval.every=2", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "sequence bandit" in printed and "near peak" in printed and "on_policy" in printed and "±" in printed
    payload = json.loads((out / "sequence_bandit_near.json").read_text())
    assert [row["method"] for row in payload["summary"]] == ["dpo", "dpo", "rwr", "rwr"]
    assert len(payload["curves"][0]["rewards"][0]) == 3
    for name in ("sequence_bandit_near_reward.png", "sequence_bandit_near_tokens.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG"), name
    assert not [p for p in out.iterdir() if p.name.endswith(".partial")]
