"""Each on-policy sample computed once per round (issue 22 item 1): the reference scores a round's
items once, in the first pass's own micro-batches, and every pass reads that table; the round's KL
comes from the first pass's policy log-probs, with no forward of its own."""

from __future__ import annotations

import pytest
import torch

from preftune.data import Origin
from preftune.data.collate import collate
from preftune.data.groups import TokenizedGroup
from preftune.modeling import AdapterDisabledReference
from preftune.objectives import SequenceLogProbs
from preftune.training.loop import sampled_log_ratio
from preftune.training.online import OnlineSettings, first_pass_kl, pairs_from_groups, train_rounds
from tests.training.test_online import make_loop


class CountingReference:
    """A live reference that counts the batches and responses it scores."""

    def __init__(self, inner: AdapterDisabledReference) -> None:
        self.inner, self.batches, self.rows = inner, 0, 0

    def records(self, batch):
        self.batches += 1
        self.rows += batch.num_records
        return self.inner.records(batch)

    def fingerprint(self) -> str:
        return self.inner.fingerprint()


def _losses(history) -> list[float]:
    return [h["loss"] for h in history]


@pytest.mark.parametrize("passes", [1, 2])
def test_the_reference_scores_each_item_once_and_training_is_unchanged(passes: int) -> None:
    """Against the reference computed per step (the trainer's own live one), the losses of every
    step agree (fp32); the table is computed from one scoring of each item, whatever T."""
    settings = OnlineSettings(rounds=2, prompts_per_round=4, samples_per_prompt=2, passes=passes, batch_size=2)
    per_step, _ = make_loop("dpo", settings)  # the trainer's live reference, called in every step
    live = train_rounds(per_step)[0]
    once, _ = make_loop("dpo", settings, kl=True)
    counting = CountingReference(once.reference)
    once.reference = counting
    trainer = once.trainer
    calls: list[int] = []
    trainer.reference.records = lambda batch, f=trainer.reference.records: calls.append(1) or f(batch)
    result, rounds = train_rounds(once)
    assert not calls  # the live reference the trainer was built with is never asked during the steps
    assert _losses(result.history) == pytest.approx(_losses(live.history), rel=1e-5, abs=1e-6)
    # each item read by some pass scored once (its 2 responses; a table refuses an id twice), not once
    # per pass: the first pass's reads, and at most the round's items (an odd one out of M = 2 is read
    # only by a pass whose order reaches it)
    assert all(r.steps == passes * (r.items // 2) for r in rounds)
    first_pass = sum(2 * 2 * (r.steps // passes) for r in rounds)
    assert first_pass <= counting.rows <= sum(2 * r.items for r in rounds)
    assert counting.rows == first_pass or passes > 1


def test_the_round_kl_is_the_first_pass_log_ratio() -> None:
    """Round 1's KL (the policy trained by round 0) equals log π − log π_ref over the round's items
    computed by hand before its training; round 0's is 0 (LoRA's B is zero: π is π_ref)."""
    settings = OnlineSettings(rounds=2, prompts_per_round=4, samples_per_prompt=2, batch_size=4)
    loop, _ = make_loop("dpo", settings, kl=True)
    trainer = loop.trainer
    result = trainer.fit(loop, steps=1)  # round 0: at most 4 pairs, one step
    loop.sample_round(1)
    loop.next_round = 2
    buffer = loop.buffer
    assert buffer is not None and buffer.total_steps == 1
    (block,) = buffer.plan.micro_batches(0, 0)
    batch = buffer.batch(block)
    with torch.no_grad():
        gap = trainer.policy(batch).sum - loop.reference.records(batch).sum
    expected = float(gap.mean())
    result = trainer.fit(loop, result=result)
    rounds = loop.finished_rounds(result.history, final=True)
    assert rounds[0].kl == pytest.approx(0.0, abs=1e-6)
    assert rounds[1].kl == pytest.approx(expected, rel=1e-5) and abs(expected) > 1e-6


def test_sampled_log_ratio_counts_only_sampled_responses() -> None:
    sampled = TokenizedGroup([1, 2], ([3], [4, 5]), (1.0, 0.0), Origin("round 0", 1), finished=(True, False))
    offline = TokenizedGroup([1, 2], ([6], [7]), (1.0, 0.0), Origin("data", 1))
    batch = collate([sampled, offline], [0, 1], pad_id=0)
    assert batch.sampled.tolist() == [True, False]
    policy = SequenceLogProbs(sum=torch.tensor([[-1.0, -2.0], [-3.0, -4.0]]), count=torch.tensor([[1, 2], [1, 1]]))
    reference = SequenceLogProbs(sum=torch.tensor([[-1.5, -1.0], [-9.0, -9.0]]), count=policy.count)
    out = sampled_log_ratio(batch, policy, reference)
    assert out == {"sampled/log_ratio_sum": pytest.approx(0.5 - 1.0), "sampled/responses": 2.0}
    assert sampled_log_ratio(batch, policy, None) == {"sampled/log_ratio_sum": 0.0, "sampled/responses": 0.0}
    steps = [
        {"sampled/log_ratio_sum": -0.5, "sampled/responses": 2.0},
        {"sampled/log_ratio_sum": 1.5, "sampled/responses": 2.0},
    ]
    assert first_pass_kl(steps) == pytest.approx(0.25)
    assert first_pass_kl([{"loss": 1.0}]) != first_pass_kl([{"loss": 1.0}])  # NaN: nothing sampled


def test_pairs_from_groups_keep_the_finished_flags() -> None:
    group = TokenizedGroup([1], ([10], [11], [12]), (0.5, 2.0, 1.0), Origin("r", 1), finished=(True, False, True))
    (pair,) = pairs_from_groups([group], "best_vs_worst", 0.0)
    assert pair.finished == (False, True)


def test_pairing_all_forwards_each_sampled_response_once() -> None:
    """dpo with pairing=all on C = 3 samples: the steps read whole groups (C rows each, every response
    once) and the loss is over every pair within them, not a batch per pair."""
    from preftune.objectives import WithinGroups, build

    settings = OnlineSettings(rounds=1, prompts_per_round=4, samples_per_prompt=3, pairing="all", batch_size=2)
    loop, batcher = make_loop(WithinGroups(build("dpo")), settings, kl=True)
    (stats,) = train_rounds(loop)[1]
    assert 0 < stats.items <= 4 and stats.steps == stats.items // 2
    assert batcher.rewards and all(r.shape[1] == 3 for r in batcher.rewards)  # groups, never pairs
    assert all(len(set(r.tolist()[0])) > 1 for r in batcher.rewards)  # each group holds a pair
    assert loop.trainer.global_step == stats.steps and stats.loss == stats.loss  # trained, a finite mean loss


def test_preftune_train_with_pairing_all_reads_groups(tmp_path) -> None:
    """Through `preftune train`: dpo with online.pairing=all trains each round's groups in place."""
    import json

    from preftune.cli.main import main
    from tests.training.common import online_overrides

    out = tmp_path / "run"
    # one step for the round (4 groups at most): the first pass's KL is then exactly the KL before
    # training (a later step of the pass sees the policy the earlier ones moved)
    changes = {"objective": "dpo", "online.pairing": "all", "online.rounds": 1, "optim.batch_size": 4}
    assert main(["train", *online_overrides(out, changes)]) == 0
    (rounds_file,) = out.rglob("rounds.jsonl")
    (record,) = [json.loads(line) for line in rounds_file.read_text().splitlines()]
    assert 0 < record["items"] <= 4  # groups (one per prompt holding a pair), not up to 3 pairs per prompt
    assert record["kl"] == pytest.approx(0.0, abs=1e-5)  # round 0 samples the untrained policy


@pytest.mark.parametrize(("examples", "total"), [(10, 2), (11, 7), (9, 1)])
def test_first_reads_of_each_process_cover_the_whole_plan_once(examples: int, total: int) -> None:
    """A process's share: its own first-epoch micro-batches (as it trains on them) and every
    world-th block read only later; the shares together are the whole plan's blocks, each once."""
    from preftune.training.plan import BatchPlan

    plan = BatchPlan(examples, 4, seed=1, world_size=2, grad_accumulation=1)
    whole = plan.first_reads(total)
    shares = [plan.first_reads(total, rank) for rank in (0, 1)]
    assert sorted(map(tuple, whole)) == sorted(tuple(b) for share in shares for b in share)
    first = min(total, plan.steps_per_epoch)
    assert shares[1][:first] == [b.tolist() for s in range(first) for b in plan.micro_batches(s, 1)]
