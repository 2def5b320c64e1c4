"""Bad specifications are refused with one clear message."""

from __future__ import annotations

import pytest

from preftune.errors import PreftuneError, SpecError
from preftune.objectives import GroupRecord, PairRecord, mle, parse, reinforce
from tests.helpers import random_pairs


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dpoo", "did you mean 'dpo'"),
        ("exmat + dpo", "did you mean 'exmate'"),
        ("nonsense", "choose from"),
        ("dpo +", "cannot parse"),
        ("dpo + * exmate", "cannot parse"),
        ("", "empty"),
        ("dpo(beta=0)", "beta must be > 0"),
        ("dpo(beta=-1.0)", "beta must be > 0"),
        ("ipo(beta=0.0)", "beta must be > 0"),
        ("dpo(label_smoothing=0.5)", "label_smoothing"),
        ("exmate(lamb=0.1)", "did you mean 'lam'"),
        ("dpo(beta='high')", "dpo: beta must be a number, got str 'high'"),
        ("dpo(average=1)", "average must be bool"),
        ("dpo(0.1)", "by name"),
        ("dpo - mle", "subtraction"),
        ("-1*dpo", "weights must be > 0"),
        ("0*dpo", "weights must be > 0"),
        ("dpo*exmate", "a number times a term"),
        ("dpo + reinforce", "cannot combine"),
        ("dpo(beta=__import__('os'))", "literals"),
        ("reinforce(baseline='avg')", "baseline must be"),
    ],
)
def test_bad_spec_is_refused_with_a_clear_message(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        parse(spec)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, PreftuneError)


def test_names_are_case_insensitive() -> None:
    assert parse("DPO + ExMATE") == parse("dpo + exmate")


@pytest.mark.parametrize("spec", ["dpo", "ipo", "hinge", "bcr", "dpo + mle"])
def test_missing_reference_is_refused(spec: str) -> None:
    record = random_pairs(seed=0)
    with pytest.raises(SpecError, match="needs reference log-probs"):
        parse(spec)(PairRecord(record.chosen, record.rejected))
    assert parse(spec).needs_reference


def test_missing_rejected_or_tokens_is_refused() -> None:
    record = random_pairs(seed=0)
    with pytest.raises(SpecError, match="needs rejected"):
        parse("exmate")(PairRecord(record.chosen))
    sums_only = PairRecord(record.chosen, type(record.rejected)(record.rejected.sum, record.rejected.count))
    with pytest.raises(SpecError, match="per-token log-probs"):
        parse("ul")(sums_only)


def test_record_of_the_wrong_kind_is_refused() -> None:
    with pytest.raises(SpecError, match="reads GroupRecord"):
        (reinforce() * 1.0)(random_pairs(seed=0))
    assert mle().record_type is PairRecord and reinforce().record_type is GroupRecord


def test_mate_warns_that_it_is_unbounded() -> None:
    with pytest.warns(UserWarning, match="unbounded below"):
        parse("mate")


def test_requirements_are_reported_before_a_run() -> None:
    objective = parse("dpo + 0.5*ul")
    assert objective.needs_reference and objective.needs_rejected and objective.needs_token_logps
    assert not parse("mle").needs_reference and not parse("exmate").needs_token_logps
    assert parse("reinforce(kl_coef=0.1)").needs_reference and not parse("reinforce").needs_reference
    assert GroupRecord is parse("bon_neg").record_type
