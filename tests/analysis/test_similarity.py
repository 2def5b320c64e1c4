"""Literal similarity (P1): the net weight on tokens that the good and bad responses share."""

from __future__ import annotations

import pytest
import torch

from preftune.analysis import shared_prefix_mask, shared_token_weight, token_weights
from preftune.errors import SpecError
from preftune.objectives import PairRecord, SequenceLogProbs


def _shared_prefix_record(seed: int, batch: int = 6, width: int = 10) -> tuple[PairRecord, torch.Tensor]:
    """Random ragged pairs whose first k[b] tokens are shared (same log-probs, policy and reference)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, width + 1, (2, batch), generator=g)
    k = torch.minimum(torch.randint(1, width + 1, (batch,), generator=g), lengths.min(0).values)
    positions = torch.arange(width)[None, :]
    shared = positions < k[:, None]
    masks = [positions < lengths[i][:, None] for i in range(2)]
    policy = [torch.rand(batch, width, generator=g, dtype=torch.float64) * -4 for _ in range(2)]
    ref = [t - torch.rand(batch, width, generator=g, dtype=torch.float64) for t in policy]
    policy[1] = torch.where(shared, policy[0], policy[1])
    ref[1] = torch.where(shared, ref[0], ref[1])
    logps = [SequenceLogProbs.from_tokens(t, m) for t, m in zip([*policy, *ref], masks * 2, strict=True)]
    return PairRecord(*logps), shared


def test_dpo_pushes_cancel_exactly_on_shared_tokens() -> None:
    record, shared = _shared_prefix_record(seed=0)
    weights = token_weights("dpo(beta=0.3)", record)
    net = shared_token_weight(weights, shared)
    assert net.shape == shared.shape
    assert torch.equal(net, torch.zeros_like(net))
    assert bool((weights.good[shared] > 0).all())  # each side does push; they cancel


@pytest.mark.parametrize("spec", ["exmate", "ul", "dpo + exmate"])
def test_mle_plus_penalty_does_not_cancel_on_shared_tokens(spec: str) -> None:
    record, shared = _shared_prefix_record(seed=1)
    weights = token_weights(spec, record)
    net = shared_token_weight(weights, shared)
    assert bool((net[shared].abs() > 1e-6).all())
    assert torch.count_nonzero(net[~shared]) == 0
    assert weights.bad is not None
    torch.testing.assert_close(net[shared], (weights.good - weights.bad)[shared])


def test_exmate_net_weight_matches_the_table() -> None:
    record, shared = _shared_prefix_record(seed=2)
    assert record.rejected is not None
    net = shared_token_weight(token_weights("exmate(lam=0.5)", record), shared)
    expected = 1 / record.chosen.count - 0.5 * torch.exp(record.rejected.mean) / record.rejected.count
    torch.testing.assert_close(net, expected[:, None] * shared)


def test_shared_prefix_mask_stops_at_the_first_difference_and_the_shorter_response() -> None:
    chosen = torch.tensor([[5, 6, 7, 8], [1, 2, 3, 4], [9, 9, 9, 0]])
    rejected = torch.tensor([[5, 6, 0, 8, 1], [1, 2, 3, 4, 5], [8, 9, 9, 0, 0]])
    chosen_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 0]]).bool()
    rejected_mask = torch.ones(3, 5, dtype=torch.bool)
    mask = shared_prefix_mask(chosen, rejected, chosen_mask, rejected_mask)
    expected = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]]).bool()
    assert torch.equal(mask, expected)


def test_shared_positions_outside_a_response_and_missing_rejected_are_refused() -> None:
    record, shared = _shared_prefix_record(seed=3)
    weights = token_weights("dpo", record)
    with pytest.raises(SpecError, match="outside"):
        shared_token_weight(weights, torch.ones(shared.shape[0], 12, dtype=torch.bool))
    only_good = token_weights("mle", PairRecord(record.chosen))
    with pytest.raises(SpecError, match="rejected"):
        shared_token_weight(only_good, shared)
