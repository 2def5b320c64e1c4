"""Properties every objective must keep, and numerics at extreme log-probabilities."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from preftune.objectives import TERMS, GroupRecord, PairRecord, SequenceLogProbs, dpo, exmate, parse
from tests.helpers import random_pairs, seq

# The built-in terms only: other test modules register deliberately broken ones (NaN on purpose).
BUILT_IN = {n: cls for n, cls in TERMS.items() if cls.__module__.startswith("preftune.")}
PAIR_TERMS = sorted(n for n, cls in BUILT_IN.items() if cls.record_type is PairRecord)
GROUP_TERMS = sorted(n for n, cls in BUILT_IN.items() if cls.record_type is GroupRecord)


def quiet_parse(spec: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parse(spec)


def duplicate_tokens(s: SequenceLogProbs) -> SequenceLogProbs:
    """Every token repeated twice in place: S doubles, n doubles, A is unchanged."""
    assert s.tokens is not None and s.mask is not None
    return SequenceLogProbs.from_tokens(s.tokens.repeat_interleave(2, -1), s.mask.repeat_interleave(2, -1))


def test_dpo_at_zero_margin_is_log_two() -> None:
    same = random_pairs(seed=0).chosen
    record = PairRecord(same, same, same, same)
    for spec in ("dpo", "dpo(beta=3.0)", "dpo(average=True)", "dpo(label_smoothing=0.3)"):
        torch.testing.assert_close(parse(spec)(record).loss, torch.full((6,), math.log(2), dtype=torch.float64))


@pytest.mark.parametrize(
    "spec", ["mle", "ul", "mate", "exmate", "dpo(average=True)", "ipo", "hinge(average=True)", "bcr", "dpop"]
)
def test_averaged_terms_ignore_token_duplication(spec: str) -> None:
    record = random_pairs(seed=1)
    doubled = PairRecord(
        *(duplicate_tokens(s) for s in (record.chosen, record.rejected, record.ref_chosen, record.ref_rejected))
    )
    objective = quiet_parse(spec)
    torch.testing.assert_close(objective(doubled).loss, objective(record).loss)


def test_summed_dpo_does_feel_token_duplication() -> None:
    record = random_pairs(seed=1)
    doubled = PairRecord(
        *(duplicate_tokens(s) for s in (record.chosen, record.rejected, record.ref_chosen, record.ref_rejected))
    )
    assert not torch.allclose(parse("dpo")(doubled).loss, parse("dpo")(record).loss)


def test_bcr_is_zero_inside_its_budget_and_linear_outside() -> None:
    ref = seq([-1.0, -1.0])
    drops = torch.linspace(-0.5, 1.0, 31, dtype=torch.float64)
    losses = []
    for drop in drops.tolist():
        record = PairRecord(chosen=seq([-1.0 - drop, -1.0 - drop]), ref_chosen=ref)
        losses.append(parse("bcr(lam=3.0, delta=0.2)")(record).loss.item())
    losses_t = torch.tensor(losses, dtype=torch.float64)
    inside = drops <= 0.2
    assert torch.all(losses_t[inside] == 0)
    torch.testing.assert_close(losses_t[~inside], 3.0 * (drops[~inside] - 0.2))


def test_string_and_python_composition_agree() -> None:
    record = random_pairs(seed=2)
    from_string = parse("dpo + 0.5*exmate")(record)
    from_python = (dpo() + 0.5 * exmate())(record)
    torch.testing.assert_close(from_string.loss, from_python.loss)
    torch.testing.assert_close(from_string.loss, from_string.terms["dpo"] + 0.5 * from_string.terms["exmate"])
    assert parse("dpo + 0.5*exmate") == dpo() + 0.5 * exmate()


def test_describe_parses_back_to_the_same_objective() -> None:
    objective = parse("dpo(beta=0.2, label_smoothing=0.1) + 0.5*exmate(lam=0.1) + ipo")
    assert parse(objective.describe()) == objective


def test_repeated_terms_get_distinct_labels() -> None:
    out = parse("dpo + dpo(beta=0.5)")(random_pairs(seed=3))
    assert set(out.terms) == {"dpo", "dpo#2"}


def extreme_pairs(value: float, length: int) -> PairRecord:
    tokens = [[value] * length, [value] * max(1, length - 1)]
    s = seq(*tokens, dtype=torch.float32)
    other = seq(*([[-1.0] * len(t) for t in tokens]), dtype=torch.float32)
    return PairRecord(s, other, other, s)


@pytest.mark.parametrize("value", [-1e4, -1e-9, -20.0])
@pytest.mark.parametrize("length", [1, 5])
@pytest.mark.parametrize("spec", PAIR_TERMS)
def test_pair_terms_stay_finite_at_extremes(spec: str, value: float, length: int) -> None:
    for record in (extreme_pairs(value, length), PairRecord(*reversed(astuple(extreme_pairs(value, length))))):
        chosen = record.chosen.tokens.clone().requires_grad_(True)
        rejected = record.rejected.tokens.clone().requires_grad_(True)
        live = PairRecord(
            SequenceLogProbs.from_tokens(chosen, record.chosen.mask),
            SequenceLogProbs.from_tokens(rejected, record.rejected.mask),
            record.ref_chosen,
            record.ref_rejected,
            kl_estimate=torch.tensor(abs(value)),  # kto's reference point, at the extremes too
        )
        out = quiet_parse(spec)(live)
        assert torch.isfinite(out.loss).all(), out.loss
        out.loss.sum().backward()
        for grad in (chosen.grad, rejected.grad):
            assert grad is None or torch.isfinite(grad).all(), grad
        assert all(torch.isfinite(v).all() for v in out.metrics.values())


def astuple(record: PairRecord) -> tuple[SequenceLogProbs, ...]:
    return (record.chosen, record.rejected, record.ref_chosen, record.ref_rejected)


@pytest.mark.parametrize("spec", [*GROUP_TERMS, "reinforce(kl_coef=0.1)", "rwr(temperature=0.01)"])
@pytest.mark.parametrize("value", [-1e4, -1e-9])
def test_group_terms_stay_finite_at_extremes(spec: str, value: float) -> None:
    sums = torch.tensor([[value, value * 3, -1.0]], requires_grad=True)
    samples = SequenceLogProbs(sum=sums, count=torch.tensor([[1.0, 3.0, 1.0]]))
    rewards = torch.tensor([[1e3, -1e3, 0.0]])
    out = parse(spec)(GroupRecord(samples, rewards, ref=SequenceLogProbs(sums.detach() - 1, samples.count)))
    assert torch.isfinite(out.loss).all()
    out.loss.sum().backward()
    assert torch.isfinite(sums.grad).all()


def test_half_precision_inputs_give_float32_losses() -> None:
    record = random_pairs(seed=4)
    half = PairRecord(*(SequenceLogProbs.from_tokens(s.tokens.to(torch.bfloat16), s.mask) for s in astuple(record)))
    out = parse("dpo + exmate + ul")(half)
    assert out.loss.dtype == torch.float32
