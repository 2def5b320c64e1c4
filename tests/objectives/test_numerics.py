"""Numerics at the edges (issue 8): log-probs of -inf, NaN and infinite rewards, ties by dtype."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from preftune.errors import SpecError
from preftune.objectives import GroupRecord, PairRecord, SequenceLogProbs, log1m_exp, parse
from preftune.objectives.metrics import tie_tolerance
from tests.helpers import seq

INF = math.inf
# One pair: chosen tokens (-1, -2) so CE(y_w) = 1.5; rejected tokens (-0.5, -inf), both in the mask.
CE_W = 1.5
# UL penalty: -(log(1 - e^-0.5) + log(1 - 0)) / n_l = 0.93275.../2; its weight on token 1: p/(1-p)/n_l.
UL_PENALTY = -math.log1p(-math.exp(-0.5)) / 2  # 0.466375...
UL_WEIGHT = math.exp(-0.5) / (1 - math.exp(-0.5)) / 2  # 0.770747...


def quiet_parse(spec: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse(spec)


def live_pair(rejected_tokens: list[float], ref_rejected: list[float] | None = None):
    """A pair whose rejected per-token log-probs are a leaf; the reference is finite unless given."""
    bad = torch.tensor([rejected_tokens], dtype=torch.float64, requires_grad=True)
    mask = torch.ones_like(bad, dtype=torch.bool)
    record = PairRecord(
        chosen=seq([-1.0, -2.0]),
        rejected=SequenceLogProbs.from_tokens(bad, mask),
        ref_chosen=seq([-1.5, -2.5]),
        ref_rejected=seq(ref_rejected or [-1.0] * len(rejected_tokens)),
    )
    return bad, record


def test_log1m_exp_is_zero_with_zero_gradient_at_minus_infinity() -> None:
    x = torch.tensor([-INF, -0.5, 0.0], dtype=torch.float64, requires_grad=True)
    y = log1m_exp(x)
    y.sum().backward()
    assert y[0].item() == 0.0 and y[1].item() == pytest.approx(math.log1p(-math.exp(-0.5)), abs=1e-15)
    assert math.isfinite(y[2].item())  # p = 1 clamped to the ceiling, not log 0
    assert x.grad[0].item() == 0.0 and torch.isfinite(x.grad).all()


def test_ul_with_an_impossible_rejected_token_matches_the_hand_value() -> None:
    bad, record = live_pair([-0.5, -INF])
    out = parse("ul")(record)
    assert out.loss.item() == pytest.approx(CE_W + UL_PENALTY, abs=1e-12)
    assert UL_PENALTY == pytest.approx(0.4664, abs=1e-4)
    out.loss.sum().backward()
    torch.testing.assert_close(bad.grad, torch.tensor([[UL_WEIGHT, 0.0]], dtype=torch.float64))
    assert UL_WEIGHT == pytest.approx(0.7707, abs=1e-4)


def test_ul_ignores_whatever_the_padding_holds() -> None:
    # A caller's own record may hold -inf or NaN outside the mask: neither may reach loss or gradient.
    bad = torch.tensor([[-0.5, -INF, math.nan]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, False]])
    rejected = SequenceLogProbs(torch.tensor([-0.5], dtype=torch.float64), mask.sum(-1).double(), bad, mask)
    out = parse("ul")(PairRecord(seq([-1.0, -2.0]), rejected))
    assert out.loss.item() == pytest.approx(CE_W - math.log1p(-math.exp(-0.5)), abs=1e-12)
    out.loss.sum().backward()
    assert torch.isfinite(bad.grad).all() and bad.grad[0, 1:].tolist() == [0.0, 0.0]


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        ("exmate", CE_W),  # exp(A_l) = exp(-inf) = 0: no penalty
        ("dpo", 0.0),  # h = +inf: -log σ(inf) = 0
        ("hinge", 0.0),
        ("mle", CE_W),
        ("bcr", 0.0),
        ("dpo + 0.5*exmate + ul", 0.5 * CE_W + CE_W + UL_PENALTY),
    ],
)
def test_pair_terms_give_no_nan_when_a_rejected_token_has_probability_zero(spec: str, value: float) -> None:
    bad, record = live_pair([-0.5, -INF])
    out = quiet_parse(spec)(record)
    assert out.loss.item() == pytest.approx(value, abs=1e-12)
    if out.loss.requires_grad:  # mle and bcr never read the rejected response
        out.loss.sum().backward()
        assert torch.isfinite(bad.grad).all(), bad.grad
    assert out.metrics["accuracy"].item() == 1.0  # h = +inf is a win, not a tie of infinite tolerance


def test_mate_is_minus_infinity_with_a_finite_gradient() -> None:
    # Unbounded below, as documented: the value is the true one; the gradient λ/n_l stays finite.
    bad, record = live_pair([-0.5, -INF])
    with pytest.warns(UserWarning, match="unbounded below"):
        out = parse("mate")(record)
    assert out.loss.item() == -INF
    out.loss.sum().backward()
    torch.testing.assert_close(bad.grad, torch.full((1, 2), 0.05 / 2, dtype=torch.float64))


def group(rewards: list[float], sums: list[float]) -> tuple[torch.Tensor, GroupRecord]:
    leaf = torch.tensor([sums], dtype=torch.float64, requires_grad=True)
    samples = SequenceLogProbs(leaf, torch.ones_like(leaf).detach())
    return leaf, GroupRecord(samples, torch.tensor([rewards], dtype=torch.float64))


@pytest.mark.parametrize(
    ("spec", "value", "grad"),
    [
        # Rewards (1, 0, 2), S = (-1, -inf, -3), n = 1: the -inf sample is never the best.
        ("bon", 3.0, [0.0, 0.0, -1.0]),
        ("bon_neg", 3.0 + 0.05 * (-1.0 - INF), [0.05, 0.05, -1.0]),
        # RWR weight of the -inf-log-prob sample is e^0 = 1: its loss is +inf, its gradient finite.
        ("rwr", INF, [-math.e / 3, -1 / 3, -(math.e**2) / 3]),
    ],
)
def test_group_terms_give_no_nan_for_a_sample_at_minus_infinity(spec: str, value: float, grad: list[float]) -> None:
    leaf, record = group([1.0, 0.0, 2.0], [-1.0, -INF, -3.0])
    out = parse(spec)(record)
    assert out.loss.item() == pytest.approx(value)
    out.loss.sum().backward()
    torch.testing.assert_close(leaf.grad, torch.tensor([grad], dtype=torch.float64))


def test_a_zero_weight_sample_at_minus_infinity_adds_exactly_nothing() -> None:
    # reinforce: rewards (1, 1, 1) give zero advantages; rwr: reward -inf gives weight 0. 0·(-inf) must not be NaN.
    leaf, record = group([1.0, 1.0, 1.0], [-1.0, -INF, -3.0])
    out = parse("reinforce")(record)
    assert out.loss.item() == 0.0
    out.loss.sum().backward()
    assert leaf.grad.tolist() == [[0.0, 0.0, 0.0]]
    leaf, record = group([1.0, -INF, 0.0], [-1.0, -INF, -3.0])
    out = parse("rwr")(record)
    assert out.loss.item() == pytest.approx((math.e + 3.0) / 3)
    out.loss.sum().backward()
    torch.testing.assert_close(leaf.grad, torch.tensor([[-math.e / 3, 0.0, -1 / 3]], dtype=torch.float64))


@pytest.mark.parametrize("spec", ["bon", "bon_neg", "rwr", "reinforce", "reinforce(baseline='mean')"])
def test_nan_rewards_are_refused_by_every_group_term_so_bon_cannot_pick_one(spec: str) -> None:
    samples = SequenceLogProbs(torch.zeros(2, 3), torch.ones(2, 3))
    # the record carries a NaN (what a padded group lacks, for WithinGroups); a term reading every response refuses it
    record = GroupRecord(samples, torch.tensor([[1.0, math.nan, 0.0], [0.0, 1.0, 2.0]]))
    with pytest.raises(SpecError, match=r"(bon|bon_neg|rwr|reinforce): 1 of 6 rewards are NaN") as info:
        parse(spec)(record)
    assert "\n" not in str(info.value)


def test_the_baseline_must_be_finite() -> None:
    samples = SequenceLogProbs(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(SpecError, match="baseline must be finite"):
        GroupRecord(samples, torch.zeros(2, 3), baseline=torch.full((2, 3), math.nan))


def test_infinite_rewards_pick_the_best_in_bon_and_are_refused_by_reinforce() -> None:
    _, record = group([1.0, INF, -INF], [-1.0, -2.0, -3.0])
    assert parse("bon")(record).loss.item() == 2.0  # +inf is the best
    assert parse("rwr")(record).loss.item() == pytest.approx((math.e * 1 + 20.0 * 2 + 0.0) / 3)
    with pytest.raises(SpecError, match=r"reinforce: rewards must be finite .* 2 of 3 are not"):
        parse("reinforce(baseline='none')")(record)


def test_reinforce_refuses_a_kl_penalty_that_is_not_finite() -> None:
    _, record = group([1.0, 0.0, 2.0], [-1.0, -INF, -3.0])
    ref = SequenceLogProbs(torch.full((1, 3), -1.0, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64))
    shaped = GroupRecord(record.samples, record.rewards, ref=ref)
    with pytest.raises(SpecError, match="after the KL penalty"):
        parse("reinforce(kl_coef=0.1)")(shaped)


# Ties in preference accuracy: within the rounding error of the four scores in their own dtype (docs/methods.md §6).
def scores_pair(chosen: float, others: float, dtype: torch.dtype) -> PairRecord:
    def one(value: float) -> SequenceLogProbs:
        return SequenceLogProbs(torch.tensor([value], dtype=dtype), torch.tensor([1.0], dtype=dtype))

    return PairRecord(one(chosen), one(others), one(others), one(others))


def accuracy(record: PairRecord) -> float:
    return parse("dpo")(record).metrics["accuracy"].item()


def test_a_float64_margin_far_above_float64_rounding_is_a_win() -> None:
    # h = 0.05 on scores near -1e5: float32 rounding is ~0.008 per score, float64 rounding ~1e-11.
    record = scores_pair(-1e5 + 0.05, -1e5, torch.float64)
    assert parse("dpo")(record).metrics["margin"].item() == pytest.approx(0.05, abs=1e-9)
    assert accuracy(record) == 1.0
    assert accuracy(scores_pair(-1e5 - 0.05, -1e5, torch.float64)) == 0.0


def test_a_float32_margin_within_float32_rounding_is_a_tie() -> None:
    # -1e5 + 0.0625 is exact in float32 (its spacing there is 2^-7); 0.0625 is within 8·eps·4e5 ≈ 0.38.
    record = scores_pair(-1e5 + 0.0625, -1e5, torch.float32)
    assert parse("dpo")(record).metrics["margin"].item() == 0.0625
    assert accuracy(record) == 0.5
    assert accuracy(scores_pair(-1e5 + 1.0, -1e5, torch.float32)) == 1.0  # well above rounding


def test_bfloat16_scores_get_a_looser_tolerance_than_float32() -> None:
    # -99.5 and -100 are adjacent bfloat16 numbers: a margin of one rounding step is a tie in bfloat16...
    assert accuracy(scores_pair(-99.5, -100.0, torch.bfloat16)) == 0.5
    # ...but the same values held in float32 are a clear win; the coarsest of the four dtypes decides.
    assert accuracy(scores_pair(-99.5, -100.0, torch.float32)) == 1.0
    mixed = scores_pair(-99.5, -100.0, torch.float32)
    mixed = PairRecord(mixed.chosen, mixed.rejected, mixed.ref_chosen, scores_pair(0, -100.0, torch.bfloat16).rejected)
    assert accuracy(mixed) == 0.5


def test_tie_tolerance_scales_with_the_dtype_precision() -> None:
    assert tie_tolerance(torch.float32) == pytest.approx(1e-6, rel=0.1)  # as before the change
    assert tie_tolerance(torch.float64) < 1e-14
    assert tie_tolerance(torch.bfloat16) > tie_tolerance(torch.float16) > tie_tolerance(torch.float32)
