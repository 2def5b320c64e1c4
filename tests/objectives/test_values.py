"""Each objective against values computed by hand from docs/methods.md §2."""

from __future__ import annotations

import math

import pytest
import torch

from preftune.objectives import GroupRecord, PairRecord, SequenceLogProbs, parse
from tests.helpers import seq

# One pair: chosen tokens (-1, -2): S_w = -3, n_w = 2, A_w = -1.5.
# Rejected tokens (-0.5, -0.5, -2): S_l = -3, n_l = 3, A_l = -1.
# Reference: S_ref,w = -4 (A = -2), S_ref,l = -2.5 (A = -5/6).
# Summed h = (-3 + 4) - (-3 + 2.5) = 1.5; averaged h = (-1.5 + 2) - (-1 + 5/6) = 2/3.
H_SUM, H_MEAN = 1.5, 2.0 / 3.0


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.fixture
def pair() -> PairRecord:
    return PairRecord(
        chosen=seq([-1.0, -2.0]),
        rejected=seq([-0.5, -0.5, -2.0]),
        ref_chosen=seq([-1.5, -2.5]),
        ref_rejected=seq([-1.0, -1.0, -0.5]),
    )


UL_PENALTY = -(2 * math.log(1 - math.exp(-0.5)) + math.log(1 - math.exp(-2.0))) / 3

EXPECTED = {
    "mle": 1.5,
    "mle(average=False)": 3.0,
    "ul": 1.5 + UL_PENALTY,
    "ul(alpha=0.5)": 1.5 + 0.5 * UL_PENALTY,
    "mate": 1.5 - 0.05 * 1.0,
    "exmate": 1.5 + 0.05 * math.exp(-1.0),
    "exmate(lam=0.2, average=False)": 3.0 + 0.2 * math.exp(-3.0),
    "dpo": softplus(-0.1 * H_SUM),
    "dpo(beta=0.5)": softplus(-0.5 * H_SUM),
    "dpo(average=True)": softplus(-0.1 * H_MEAN),
    "dpo(label_smoothing=0.2)": 0.8 * softplus(-0.15) + 0.2 * softplus(0.15),
    "ipo": (H_MEAN - 5.0) ** 2,
    "ipo(beta=0.5, average=False)": (H_SUM - 1.0) ** 2,
    "hinge": 1 - 0.1 * H_SUM,
    "hinge(beta=1.0)": 0.0,
    # The chosen likelihood rose (A_w = -1.5 > A_ref,w = -2): inside any budget.
    "bcr": 0.0,
    "dpop": 0.0,
    "dpo + 0.5*exmate": softplus(-0.15) + 0.5 * (1.5 + 0.05 * math.exp(-1.0)),
    "2*mle + hinge": 3.0 + 0.85,
}


@pytest.mark.parametrize("spec", list(EXPECTED))
def test_pair_objective_matches_hand_value(pair: PairRecord, spec: str) -> None:
    out = parse(spec)(pair)
    assert out.loss.shape == (1,)
    assert out.loss.item() == pytest.approx(EXPECTED[spec], abs=1e-12)


def test_bcr_outside_budget_is_linear_in_the_drop() -> None:
    # A_ref,w = -1 and A_w = -1.5: the chosen likelihood fell by 0.5 nats/token.
    record = PairRecord(chosen=seq([-1.0, -2.0]), ref_chosen=seq([-1.0, -1.0]))
    assert parse("bcr")(record).loss.item() == pytest.approx(0.5 - 0.05)
    assert parse("bcr(lam=2.0, delta=0.1)")(record).loss.item() == pytest.approx(2 * (0.5 - 0.1))
    assert parse("dpop")(record).loss.item() == pytest.approx(0.5)


def test_metrics_of_a_pair(pair: PairRecord) -> None:
    m = parse("dpo(beta=0.1)")(pair).metrics
    assert m["margin"].item() == pytest.approx(H_SUM)
    assert m["rewards/chosen"].item() == pytest.approx(0.1 * 1.0)
    assert m["rewards/rejected"].item() == pytest.approx(0.1 * -0.5)
    assert m["accuracy"].item() == 1.0
    assert m["chosen_drift"].item() == pytest.approx(0.5)
    assert m["likelihood_accuracy"].item() == 0.0  # A_w = -1.5 < A_l = -1
    assert parse("ipo")(pair).metrics["margin"].item() == pytest.approx(H_MEAN)


def test_accuracy_counts_ties_half() -> None:
    same = seq([-1.0, -2.0], [-0.5])
    record = PairRecord(same, same, same, same)
    assert parse("dpo")(record).metrics["accuracy"].tolist() == [0.5, 0.5]


# One prompt, three samples: S = (-1, -2, -3), n = (1, 2, 3), so A = -1 for all; r = (1, 0, 2).
@pytest.fixture
def group() -> GroupRecord:
    samples = SequenceLogProbs(
        sum=torch.tensor([[-1.0, -2.0, -3.0]], dtype=torch.float64),
        count=torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64),
    )
    return GroupRecord(samples=samples, rewards=torch.tensor([[1.0, 0.0, 2.0]], dtype=torch.float64))


GROUP_EXPECTED = {
    # Leave-one-out baselines (1, 1.5, 0.5), advantages (0, -1.5, 1.5): mean of -adv*S = (0 - 3 + 4.5)/3.
    "reinforce": 0.5,
    # Mean baseline 1, advantages (0, -1, 1): (0 - 2 + 3)/3.
    "reinforce(baseline='mean')": 1.0 / 3.0,
    "reinforce(baseline='none')": (1 * 1 + 0 + 2 * 3) / 3,
    # Weights exp(r) = (e, 1, e^2), all under w_max = 20; A = -1 everywhere.
    "rwr": (math.e + 1 + math.e**2) / 3,
    "rwr(w_max=2.0)": (2 + 1 + 2) / 3,
    "bon": 1.0,
    "bon_neg": 1.0 + 0.1 / 2 * (-1 - 1),
}


@pytest.mark.parametrize("spec", list(GROUP_EXPECTED))
def test_group_objective_matches_hand_value(group: GroupRecord, spec: str) -> None:
    out = parse(spec)(group)
    assert out.loss.shape == (1,)
    assert out.loss.item() == pytest.approx(GROUP_EXPECTED[spec], abs=1e-12)


def test_reinforce_kl_penalty_shapes_the_reward(group: GroupRecord) -> None:
    ref = SequenceLogProbs(sum=group.samples.sum - 1.0, count=group.samples.count)  # KL estimate 1 per sample
    shaped = GroupRecord(group.samples, group.rewards, ref=ref)
    # A uniform KL shift of the rewards cancels in the leave-one-out baseline...
    assert parse("reinforce(kl_coef=0.5)")(shaped).loss.item() == pytest.approx(0.5)
    # ...but not without a baseline: rewards (0.5, -0.5, 1.5).
    assert parse("reinforce(kl_coef=0.5, baseline='none')")(shaped).loss.item() == pytest.approx(
        (0.5 * 1 - 0.5 * 2 + 1.5 * 3) / 3
    )
