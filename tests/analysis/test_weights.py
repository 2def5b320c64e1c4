"""token_weights against the weight table of docs/methods.md §3 (P1), on random ragged records."""

from __future__ import annotations

import pytest
import torch

from preftune.analysis import TokenWeights, token_weights
from preftune.errors import SpecError
from preftune.objectives import PairRecord, SequenceLogProbs, exmate, parse
from tests.helpers import random_pairs


def _dpo_scalar(record: PairRecord, beta: float = 0.1) -> torch.Tensor:
    """``[B]`` β·σ(-β·h) with h from sums, computed by hand from the record."""
    assert record.rejected is not None and record.ref_chosen is not None and record.ref_rejected is not None
    h = (record.chosen.sum - record.ref_chosen.sum) - (record.rejected.sum - record.ref_rejected.sum)
    return beta * torch.sigmoid(-beta * h)


def _per_token(record: SequenceLogProbs | None, values: torch.Tensor) -> torch.Tensor:
    """``[B, T]``: the ``[B]`` values broadcast onto the response tokens, zero elsewhere."""
    assert record is not None and record.mask is not None
    return values[:, None] * record.mask


def test_weights_have_response_shapes_and_are_zero_outside_the_mask() -> None:
    record = random_pairs(batch=5, width=9, seed=3)
    weights = token_weights("dpo + ul", record)
    assert isinstance(weights, TokenWeights)
    assert weights.bad is not None and weights.bad_mask is not None and record.rejected is not None
    assert weights.good.shape == record.chosen.tokens.shape  # type: ignore[union-attr]
    assert weights.bad.shape == record.rejected.tokens.shape  # type: ignore[union-attr]
    assert torch.count_nonzero(weights.good[~weights.good_mask]) == 0
    assert torch.count_nonzero(weights.bad[~weights.bad_mask]) == 0
    torch.testing.assert_close(weights.loss, parse("dpo + ul")(record).loss)
    assert not weights.good.requires_grad and not weights.bad.requires_grad


def test_mle_pushes_every_good_token_by_one_over_n_and_no_bad_token() -> None:
    record = random_pairs(seed=1)
    weights = token_weights("mle", record)
    torch.testing.assert_close(weights.good, _per_token(record.chosen, 1.0 / record.chosen.count))
    assert weights.bad is not None and torch.count_nonzero(weights.bad) == 0


def test_ul_bad_weight_is_alpha_p_over_one_minus_p_over_n() -> None:
    record = random_pairs(seed=2, low=-3.0)
    assert record.rejected is not None and record.rejected.tokens is not None
    weights = token_weights("ul(alpha=2.0)", record)
    p = record.rejected.tokens.exp()
    expected = (2.0 * p / (1 - p) / record.rejected.count[:, None]).masked_fill(~record.rejected.mask, 0.0)
    torch.testing.assert_close(weights.bad, expected)
    torch.testing.assert_close(weights.good, _per_token(record.chosen, 1.0 / record.chosen.count))


def test_exmate_bad_weight_is_lambda_exp_mean_over_n_and_bounded() -> None:
    record = random_pairs(seed=4, low=-1.0)
    assert record.rejected is not None
    weights = token_weights("exmate(lam=0.3)", record)
    n_l = record.rejected.count
    expected = _per_token(record.rejected, 0.3 * torch.exp(record.rejected.mean) / n_l)
    torch.testing.assert_close(weights.bad, expected)
    assert weights.bad is not None
    assert bool((weights.bad <= _per_token(record.rejected, 0.3 / n_l) + 1e-12).all())
    assert bool((weights.bad[weights.bad_mask] > 0).all())


def test_dpo_weight_is_one_scalar_on_every_token_of_both_responses() -> None:
    record = random_pairs(seed=5)
    weights = token_weights("dpo", record)
    scalar = _dpo_scalar(record)
    torch.testing.assert_close(weights.good, _per_token(record.chosen, scalar))
    torch.testing.assert_close(weights.bad, _per_token(record.rejected, scalar))


def test_dpo_plus_exmate_is_the_sum_of_both_tables() -> None:
    record = random_pairs(seed=6)
    assert record.rejected is not None
    weights = token_weights("dpo + exmate", record)
    scalar = _dpo_scalar(record)
    good = _per_token(record.chosen, scalar + 1.0 / record.chosen.count)
    bad = _per_token(record.rejected, scalar + 0.05 * torch.exp(record.rejected.mean) / record.rejected.count)
    torch.testing.assert_close(weights.good, good)
    torch.testing.assert_close(weights.bad, bad)


def test_weighted_composition_is_linear_in_the_terms() -> None:
    record = random_pairs(seed=7)
    both = token_weights(parse("dpo(beta=0.3) + 0.5*exmate"), record)
    dpo = token_weights("dpo(beta=0.3)", record)
    ex = token_weights(exmate(), record)
    torch.testing.assert_close(both.good, dpo.good + 0.5 * ex.good)
    torch.testing.assert_close(both.bad, dpo.bad + 0.5 * ex.bad)  # type: ignore[operator]


def test_each_example_keeps_its_own_weights_whatever_the_batch() -> None:
    record = random_pairs(batch=4, seed=8)
    whole = token_weights("dpo + ul", record)

    def row(s: SequenceLogProbs | None) -> SequenceLogProbs:
        assert s is not None and s.tokens is not None and s.mask is not None
        return SequenceLogProbs.from_tokens(s.tokens[2:3], s.mask[2:3])

    single = PairRecord(row(record.chosen), row(record.rejected), row(record.ref_chosen), row(record.ref_rejected))
    alone = token_weights("dpo + ul", single)
    torch.testing.assert_close(alone.good[0], whole.good[2])
    torch.testing.assert_close(alone.bad[0], whole.bad[2])  # type: ignore[index]


def test_works_without_rejected_under_no_grad_and_in_half_precision() -> None:
    record = random_pairs(seed=9)
    assert record.chosen.tokens is not None and record.chosen.mask is not None
    half = SequenceLogProbs.from_tokens(record.chosen.tokens.to(torch.bfloat16), record.chosen.mask)
    with torch.no_grad():
        weights = token_weights("mle", PairRecord(half))
    assert weights.bad is None and weights.bad_mask is None
    assert weights.good.dtype == torch.float32
    assert half.mask is not None
    torch.testing.assert_close(weights.good, _per_token(half, 1.0 / half.mask.sum(-1).float()))


def test_record_without_per_token_logps_is_refused() -> None:
    record = random_pairs(seed=10)
    sums_only = PairRecord(
        SequenceLogProbs(record.chosen.sum, record.chosen.count),
        record.rejected,
        record.ref_chosen,
        record.ref_rejected,
    )
    with pytest.raises(SpecError, match="per-token log-probs of the chosen"):
        token_weights("dpo", sums_only)
    assert record.rejected is not None
    no_bad_tokens = PairRecord(record.chosen, SequenceLogProbs(record.rejected.sum, record.rejected.count))
    with pytest.raises(SpecError, match="per-token log-probs of the rejected"):
        token_weights("mle", no_bad_tokens)


def test_group_objectives_and_bad_specs_are_refused() -> None:
    record = random_pairs(seed=11)
    with pytest.raises(SpecError, match="pairwise"):
        token_weights("reinforce", record)
    with pytest.raises(SpecError):
        token_weights("dpoo", record)
