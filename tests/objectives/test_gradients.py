"""Autograd gradients of each term against the weight table of docs/methods.md §3 (P1).

w_good(t) = -dL/d log π(y_w,t) and w_bad(t) = +dL/d log π(y_l,t), with L the batch sum.
"""

from __future__ import annotations

import torch

from preftune.objectives import PairRecord, SequenceLogProbs, parse
from tests.helpers import random_pairs


def weights(spec: str, record: PairRecord) -> tuple[torch.Tensor, torch.Tensor, PairRecord]:
    assert record.chosen.tokens is not None and record.rejected is not None and record.rejected.tokens is not None
    good = record.chosen.tokens.detach().clone().requires_grad_(True)
    bad = record.rejected.tokens.detach().clone().requires_grad_(True)
    live = PairRecord(
        SequenceLogProbs.from_tokens(good, record.chosen.mask),
        SequenceLogProbs.from_tokens(bad, record.rejected.mask),
        record.ref_chosen,
        record.ref_rejected,
    )
    parse(spec)(live).loss.sum().backward()
    # A term that never reads a response leaves its gradient unset: a zero weight.
    good_grad = torch.zeros_like(good) if good.grad is None else good.grad
    bad_grad = torch.zeros_like(bad) if bad.grad is None else bad.grad
    return -good_grad, bad_grad, live


def test_mle_pushes_every_good_token_by_one_over_n() -> None:
    record = random_pairs(seed=1)
    good, bad, live = weights("mle", record)
    expected = live.chosen.mask / live.chosen.count[:, None]
    torch.testing.assert_close(good, expected.to(good.dtype))
    assert torch.count_nonzero(bad) == 0


def test_ul_penalty_weight_is_p_over_one_minus_p() -> None:
    record = random_pairs(seed=2, low=-3.0)
    good, bad, live = weights("ul(alpha=0.7)", record)
    p = live.rejected.tokens.detach().exp().masked_fill(~live.rejected.mask, 0.0)
    expected = 0.7 * p / (1 - p) / live.rejected.count[:, None] * live.rejected.mask
    torch.testing.assert_close(bad, expected)
    torch.testing.assert_close(good, live.chosen.mask / live.chosen.count[:, None] + 0.0 * good)


def test_exmate_penalty_weight_is_bounded_by_lambda_over_n() -> None:
    for seed in range(5):
        record = random_pairs(seed=seed, low=-2.0)
        _, bad, live = weights("exmate(lam=0.3)", record)
        n_l = live.rejected.count[:, None]
        expected = 0.3 * live.rejected.mean.detach()[:, None].exp() / n_l * live.rejected.mask
        torch.testing.assert_close(bad, expected)
        assert bool((bad <= 0.3 / n_l + 1e-15).all())
        assert bool((bad >= 0).all())


def test_exmate_weight_approaches_its_bound_as_bad_becomes_certain() -> None:
    record = random_pairs(seed=3, low=-1e-6)
    _, bad, live = weights("exmate", record)
    bound = 0.05 / live.rejected.count[:, None] * live.rejected.mask
    torch.testing.assert_close(bad, bound.to(bad.dtype), atol=1e-7, rtol=1e-5)


def test_dpo_weight_is_one_scalar_on_every_token_of_both_responses() -> None:
    record = random_pairs(seed=4)
    for beta in (0.05, 0.1, 1.0):
        good, bad, live = weights(f"dpo(beta={beta})", record)
        margin = parse(f"dpo(beta={beta})")(live).metrics["margin"]
        scalar = beta * torch.sigmoid(-beta * margin)
        torch.testing.assert_close(good, scalar[:, None] * live.chosen.mask)
        torch.testing.assert_close(bad, scalar[:, None] * live.rejected.mask)


def test_averaged_dpo_divides_the_weight_by_each_length() -> None:
    record = random_pairs(seed=5)
    good, bad, live = weights("dpo(average=True)", record)
    scalar = 0.1 * torch.sigmoid(-0.1 * parse("dpo(average=True)")(live).metrics["margin"])
    torch.testing.assert_close(good, (scalar / live.chosen.count)[:, None] * live.chosen.mask)
    torch.testing.assert_close(bad, (scalar / live.rejected.count)[:, None] * live.rejected.mask)


def test_composition_weights_add_up() -> None:
    record = random_pairs(seed=6)
    joint = weights("dpo + 0.5*exmate", record)
    dpo_only, exmate_only = weights("dpo", record), weights("exmate", record)
    torch.testing.assert_close(joint[0], dpo_only[0] + 0.5 * exmate_only[0])
    torch.testing.assert_close(joint[1], dpo_only[1] + 0.5 * exmate_only[1])


def test_ipo_weight_is_linear_in_the_margin_gap() -> None:
    # d/dh (h - 1/(2β))² = 2(h - 1/(2β)): negative below the target, so good tokens are pushed up.
    record = random_pairs(seed=7)
    good, _, live = weights("ipo(beta=0.1)", record)
    h = parse("ipo(beta=0.1)")(live).metrics["margin"]
    expected = -2 * (h - 5.0) / live.chosen.count
    torch.testing.assert_close(good, expected[:, None] * live.chosen.mask)


def test_bcr_pushes_chosen_up_only_outside_its_budget() -> None:
    record = random_pairs(seed=8)
    good, _, live = weights("bcr(lam=2.0, delta=0.05)", record)
    drop = live.ref_chosen.mean - live.chosen.mean.detach()
    outside = (drop > 0.05).to(good.dtype)
    torch.testing.assert_close(good, (2.0 * outside / live.chosen.count)[:, None] * live.chosen.mask)
