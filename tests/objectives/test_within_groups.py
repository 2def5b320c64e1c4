"""Pairs within sampled groups (issue 22): a pairwise objective read on a ``[P, C]`` group record gives
the losses and gradients of the same pairs built one by one, each response's log-prob computed once."""

from __future__ import annotations

import pytest
import torch

from preftune.errors import SpecError
from preftune.objectives import GroupRecord, PairRecord, SequenceLogProbs, WithinGroups, pairs_within, parse


def _group(rewards: list[list[float]], seed: int = 0) -> tuple[GroupRecord, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sums = (-torch.rand(len(rewards), len(rewards[0]), generator=g, dtype=torch.float64) * 20).requires_grad_()
    counts = torch.randint(3, 9, sums.shape, generator=g).double()
    ref = -torch.rand(sums.shape, generator=g, dtype=torch.float64) * 20
    record = GroupRecord(
        SequenceLogProbs(sums, counts), torch.tensor(rewards, dtype=torch.float64), SequenceLogProbs(ref, counts)
    )
    return record, sums


def test_pairs_within_takes_every_pair_above_the_gap_in_order() -> None:
    record, sums = _group([[0.5, 2.0, 1.0], [3.0, 3.0, 0.0]])
    pairs = pairs_within(record, gap=0.0)
    # group 0: (1, 0), (1, 2), (2, 0); group 1: (0, 2), (1, 2) (0 and 1 tie)
    expected = [(0, 1, 0), (0, 1, 2), (0, 2, 0), (1, 0, 2), (1, 1, 2)]
    assert pairs.batch_size == len(expected)
    for n, (p, i, j) in enumerate(expected):
        assert float(pairs.chosen.sum[n]) == float(sums[p, i]) and float(pairs.rejected.sum[n]) == float(sums[p, j])
        assert float(pairs.ref_chosen.sum[n]) == float(record.ref.sum[p, i])
    assert pairs_within(record, gap=1.0).batch_size == 3  # only differences above 1: 2.0 - 0.5, and 3.0 - 0.0 twice


@pytest.mark.parametrize("spec", ["dpo", "ipo(average=True)", "hinge + 0.5*mle", "dpo + bcr"])
def test_losses_and_gradients_equal_the_pairs_built_one_by_one(spec: str) -> None:
    objective = parse(spec)
    if objective.needs_token_logps:
        pytest.skip("token log-probs: covered by the gather of tokens below")
    record, sums = _group([[0.5, 2.0, 1.0, 1.5], [3.0, 3.0, 0.0, 1.0]], seed=1)
    grouped = WithinGroups(objective, gap=0.0)(record)
    grouped.loss.mean().backward()
    grad_grouped = sums.grad.clone()
    sums.grad = None
    rows = []  # the same pairs, each its own item: chosen and rejected copied out of the group
    r = record.rewards
    for p in range(r.shape[0]):
        for i in range(r.shape[1]):
            for j in range(r.shape[1]):
                if r[p, i] - r[p, j] > 0:
                    rows.append((p, i, j))
    pick = lambda s, k: SequenceLogProbs(  # noqa: E731
        torch.stack([s.sum[p, x] for (p, *_), x in zip(rows, k, strict=True)]),
        torch.stack([s.count[p, x] for (p, *_), x in zip(rows, k, strict=True)]),
    )
    chosen, rejected = [i for _, i, _ in rows], [j for _, _, j in rows]
    one_by_one = objective(
        PairRecord(
            pick(record.samples, chosen),
            pick(record.samples, rejected),
            pick(record.ref, chosen),
            pick(record.ref, rejected),
        )
    )
    one_by_one.loss.mean().backward()
    assert torch.allclose(grouped.loss, one_by_one.loss, rtol=1e-12, atol=0)
    assert torch.allclose(grad_grouped, sums.grad, rtol=1e-12, atol=1e-15)


def test_token_log_probs_are_gathered_with_their_masks() -> None:
    tokens = torch.randn(2, 3, 5, dtype=torch.float64)
    mask = torch.rand(2, 3, 5) > 0.3
    mask[..., 0] = True
    samples = SequenceLogProbs.from_tokens(tokens, mask)
    record = GroupRecord(samples, torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 1.0]]))
    pairs = pairs_within(record)
    first = pairs.chosen  # group 0, response 0 beats response 1: the first pair in order is (0, 0, 1)
    assert torch.equal(first.tokens[0], samples.tokens[0, 0]) and torch.equal(pairs.rejected.mask[0], mask[0, 1])


def test_within_groups_is_refused_for_a_group_objective_or_a_negative_gap() -> None:
    with pytest.raises(SpecError, match="pairwise objective"):
        WithinGroups(parse("reinforce"))
    with pytest.raises(SpecError, match="gap"):
        WithinGroups(parse("dpo"), gap=-1.0)
    record, _ = _group([[1.0, 1.0]])
    with pytest.raises(SpecError, match="no pair"):
        WithinGroups(parse("dpo"))(record)
    wrapped = WithinGroups(parse("dpo + 0.5*exmate"))
    assert wrapped.record_type is GroupRecord and wrapped.needs_reference and str(wrapped) == "dpo + 0.5*exmate"
