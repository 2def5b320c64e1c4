"""Terms, objectives and records built in Python are held to the same rules as parse() (issue 8)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch

from preftune.errors import SpecError
from preftune.objectives import (
    TERMS,
    GroupRecord,
    Objective,
    PairRecord,
    SequenceLogProbs,
    Term,
    bcr,
    bon,
    dpo,
    dpop,
    exmate,
    make_term,
    mle,
    param,
    parse,
    reinforce,
    rwr,
    ul,
)
from tests.helpers import random_pairs, seq

BUILT_IN = {n: cls for n, cls in TERMS.items() if cls.__module__.startswith("preftune.")}
# Every float hyper-parameter of every built-in term: each must refuse nan and ±inf.
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # mate's warning
    FLOAT_PARAMS = [
        (name, field)
        for name, cls in sorted(BUILT_IN.items())
        for field, value in vars(cls()).items()
        if isinstance(value, float)
    ]


def one_line(info: pytest.ExceptionInfo[SpecError]) -> str:
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("term", "param"), FLOAT_PARAMS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_every_float_parameter_refuses_non_finite_values(term: str, param: str, bad: float) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mate's warning
        with pytest.raises(SpecError, match=f"^{term}: {param} must be finite, got") as info:
            TERMS[term](**{param: bad})
    one_line(info)


def test_the_float_parameters_cover_every_term_with_numbers() -> None:
    # If a term grew a float field the list above missed, the non-finite test would silently skip it.
    assert {"beta", "label_smoothing", "lam", "alpha", "delta", "kl_coef", "temperature", "w_max"} <= {
        p for _, p in FLOAT_PARAMS
    }


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: dpo(beta="0.1"), "dpo: beta must be a number, got str '0.1'"),
        (lambda: dpo(beta=True), "dpo: beta must be a number, got bool True"),
        (lambda: dpo(beta=None), "dpo: beta must be a number, got NoneType None"),
        (lambda: dpo(beta=torch.tensor(0.1)), "dpo: beta must be a number, got Tensor"),
        (lambda: dpo(beta=0.0), "dpo: beta must be > 0, got 0.0"),
        (lambda: dpo(label_smoothing=0.5), r"dpo: label_smoothing must be in \[0, 0.5\), got 0.5"),
        (lambda: dpo(average=1), "dpo: average must be bool"),
        (lambda: exmate(lam=-0.1), "exmate: lam must be >= 0, got -0.1"),
        (lambda: ul(alpha="1"), "ul: alpha must be a number"),
        (lambda: bcr(delta=-1), "bcr: delta must be >= 0, got -1.0"),
        (lambda: dpop(delta=-1.0), "dpop: delta must be >= 0"),  # a changed default keeps its base's bounds
        (lambda: rwr(w_max=0), "rwr: w_max must be > 0"),
        (lambda: reinforce(baseline="avg"), "reinforce: baseline must be one of 'loo', 'mean', 'given', 'none'"),
        (lambda: reinforce(baseline=1), "reinforce: baseline must be one of"),
    ],
)
def test_terms_built_in_python_refuse_bad_values_with_one_line(build, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        build()
    one_line(info)


def test_numbers_are_normalised_to_float_so_python_and_parse_agree() -> None:
    term = dpo(beta=1)
    assert type(term.beta) is float and term == parse("dpo(beta=1)").terms[0]
    assert type(dpo(beta=np.float32(0.5)).beta) is float
    assert parse(parse("dpo(beta=2) + 3*exmate").describe()) == dpo(beta=2.0) + 3.0 * exmate()


@dataclass(frozen=True)
class Careless(Term):
    """A user term whose own __post_init__ forgets to call Term's."""

    name: ClassVar[str] = "careless"
    scale: float = 1.0
    steps: int = 1

    def __post_init__(self) -> None:
        pass


@dataclass(frozen=True)
class Scaled(Term):
    """A user term declaring its bounds the way the built-in ones do."""

    name: ClassVar[str] = "scaled"
    gamma: float = param(0.5, gt=0, le=1)


def test_a_user_term_gets_the_same_checks_from_its_declared_bounds() -> None:
    assert Scaled(gamma=1).gamma == 1.0
    for bad, message in (
        (0.0, r"^scaled: gamma must be in \(0, 1\], got 0\.0$"),
        (1.5, r"^scaled: gamma must be in \(0, 1\], got 1\.5$"),
        (math.nan, r"^scaled: gamma must be finite, got nan$"),
    ):
        with pytest.raises(SpecError, match=message):
            Scaled(gamma=bad)


def test_a_user_term_is_checked_at_the_latest_when_it_joins_an_objective() -> None:
    bad = Careless(scale=math.nan)  # its __post_init__ skipped the check...
    with pytest.raises(SpecError, match="careless: scale must be finite"):
        bad + mle()  # ...the objective does not
    with pytest.raises(SpecError, match=r"careless: steps must be an integer, got float 2\.0"):
        Objective.of(Careless(steps=2.0))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: -0.5 * exmate(), "objective weights must be > 0, got -0.5 for"),
        (lambda: 0 * dpo(), "objective weights must be > 0, got 0 for"),
        (lambda: dpo() * 0.0, "objective weights must be > 0"),
        (lambda: math.nan * dpo(), "objective weights must be finite, got nan"),
        (lambda: math.inf * dpo(), "objective weights must be finite, got inf"),
        (lambda: 1e200 * (1e200 * dpo()), "objective weights must be finite, got inf"),  # the product overflows
        (lambda: True * dpo(), "objective weights must be numbers, got bool True"),
        (lambda: "2" * dpo(), "objective weights must be numbers, got str '2'"),
        (lambda: 2 * (dpo() + -1 * exmate()), "weights must be > 0"),
        (lambda: -2 * (dpo() + exmate()), "objective weights must be > 0, got -2"),
        (lambda: (dpo() + exmate()) * -1, "objective weights must be > 0"),
        (lambda: dpo() * exmate(), "a number times a term"),
        (lambda: dpo() - exmate(), "subtraction is not allowed"),
        (lambda: (dpo() + mle()) - exmate(), "subtraction is not allowed"),
        (lambda: -dpo(), "subtraction is not allowed"),
        (lambda: -(dpo() + mle()), "subtraction is not allowed"),
        (lambda: 1 - dpo(), "subtraction is not allowed"),
        (lambda: dpo() / 0, "divided by a finite number > 0, got 0"),
        (lambda: dpo() / -2, "divided by a finite number > 0, got -2"),
        (lambda: (dpo() + mle()) / math.nan, "divided by a finite number > 0"),
        (lambda: 2 / dpo(), "not a number by a term"),
        (lambda: dpo() / exmate(), "not a number by a term"),
        (lambda: dpo() + 1, "cannot add int 1 to an objective"),
        (lambda: 1 + dpo(), "cannot add int 1 to an objective"),
        (lambda: Objective(((-1.0, dpo()),)), "objective weights must be > 0, got -1 for 'dpo'"),
        (lambda: Objective(((1.0, "dpo"),)), "an objective holds terms such as dpo()"),
        (lambda: Objective(dpo()), "Objective takes"),
        (lambda: Objective(()), "at least one term"),
    ],
)
def test_python_composition_refuses_what_parse_refuses(build, message: str) -> None:
    with pytest.raises(SpecError, match=message) as info:
        build()
    one_line(info)


def test_python_composition_agrees_with_parse() -> None:
    assert 2 * (dpo() + exmate()) == parse("2*(dpo + exmate)")
    assert (dpo() + exmate()) * 2 == parse("(dpo + exmate)*2")
    assert (dpo() + mle()) / 4 == parse("(dpo + mle)/4") == 0.25 * dpo() + 0.25 * mle()
    assert Objective(((1, dpo()),)).weighted_terms == ((1.0, dpo()),)
    assert parse("dpo/2").weighted_terms[0][0] == 0.5


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dpo(**{'beta': 5.0})", r"\*\*kwargs is not allowed"),
        ("dpo(beta=0.2, **{'beta': 5.0})", r"\*\*kwargs is not allowed"),
        ("dpo(*[5.0])", r"\*args is not allowed"),
        ("dpo(beta=0.2, beta=5.0)", "beta more than once"),
        ("dpo(beta=1e999)", "dpo: beta must be finite, got inf"),
        ("1e999*dpo", "weights must be finite, got inf"),
        ("1e-400*dpo", "weights must be > 0, got 0"),
        ("dpo/0", "divided by a finite number > 0"),
        ("2/dpo", "divided by a number only"),
        ("dpo(beta={[1]: 2})", "literals"),
        ("dpo(beta=[0.1])", "dpo: beta must be a number, got list"),
        ("dpo(beta=None)", "dpo: beta must be a number, got NoneType"),
        ("dpo(beta=True)", "dpo: beta must be a number, got bool"),
        ("dpo.beta", "expected terms like"),
        ("dpo()()", "expected terms like"),
        ("dpo + 1", "expected terms like"),
        ("dpo\x00", "cannot parse"),
        ("+".join(["dpo"] * 5000), "objective"),
    ],
)
def test_parse_refuses_what_it_does_not_understand(spec: str, message: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SpecError, match=message) as info:
            parse(spec)
    one_line(info)


def test_parse_reports_a_missing_required_parameter_of_a_user_term() -> None:
    @dataclass(frozen=True)
    class Needs(Term):
        name: ClassVar[str] = "needs_x"
        x: float

    TERMS["needs_x"] = Needs
    try:
        with pytest.raises(SpecError, match="needs_x needs parameter 'x'"):
            make_term("needs_x")
        assert make_term("needs_x", x=2).x == 2.0
    finally:
        del TERMS["needs_x"]


# Records: a [B, 1] field against a [B] one used to broadcast into a [B, B] loss.
def test_pair_record_refuses_fields_of_different_batch_shapes() -> None:
    b4, b3 = random_pairs(batch=4, seed=0), random_pairs(batch=3, seed=1)
    column = SequenceLogProbs(b4.rejected.sum[:, None], b4.rejected.count[:, None])
    with pytest.raises(SpecError, match=r"PairRecord: rejected \(4, 1\) and chosen \(4,\) differ in shape") as info:
        PairRecord(b4.chosen, column, b4.ref_chosen, b4.ref_rejected)
    one_line(info)
    with pytest.raises(SpecError, match=r"ref_rejected \(3,\) and chosen \(4,\)"):
        PairRecord(b4.chosen, b4.rejected, b4.ref_chosen, b3.ref_rejected)
    with pytest.raises(SpecError, match=r"must be \[B\]"):
        PairRecord(SequenceLogProbs(b4.chosen.sum[:, None], b4.chosen.count[:, None]))


def test_sequence_log_probs_refuse_inconsistent_shapes() -> None:
    s = seq([-1.0, -2.0], [-0.5])  # sum [2], tokens [2, 2]
    with pytest.raises(SpecError, match=r"sum \(2, 1\) and count \(2,\) differ in shape"):
        SequenceLogProbs(s.sum[:, None], s.count)
    with pytest.raises(SpecError, match=r"tokens \(2, 2\) and mask \(2, 3\) differ"):
        SequenceLogProbs(s.sum, s.count, s.tokens, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(SpecError, match=r"tokens \(3, 2\) must be sum's shape \(2,\) plus one token axis"):
        SequenceLogProbs(s.sum, s.count, torch.zeros(3, 2), torch.ones(3, 2, dtype=torch.bool))
    with pytest.raises(SpecError, match="both or neither"):
        SequenceLogProbs(s.sum, s.count, s.tokens)
    with pytest.raises(SpecError, match="mask must be bool"):
        SequenceLogProbs(s.sum, s.count, s.tokens, s.mask.float())


def test_group_record_refuses_fields_of_different_shapes() -> None:
    samples = SequenceLogProbs(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(SpecError, match=r"samples \(2, 3\) and rewards \(2, 1\) differ"):
        GroupRecord(samples, torch.zeros(2, 1))
    with pytest.raises(SpecError, match=r"rewards must be a \[prompts, samples\] tensor, got \(6,\)"):
        GroupRecord(samples, torch.zeros(6))
    with pytest.raises(SpecError, match=r"ref \(2, 1\) and rewards \(2, 3\)"):
        GroupRecord(samples, torch.zeros(2, 3), ref=SequenceLogProbs(torch.zeros(2, 1), torch.ones(2, 1)))
    with pytest.raises(SpecError, match=r"baseline \(2,\) and rewards \(2, 3\)"):
        GroupRecord(samples, torch.zeros(2, 3), baseline=torch.zeros(2))


def test_matching_records_still_give_one_loss_per_pair() -> None:
    record = random_pairs(batch=5, seed=2)
    assert parse("dpo + exmate + ul")(record).loss.shape == (5,)
    group = GroupRecord(SequenceLogProbs(torch.zeros(2, 3), torch.ones(2, 3)), torch.zeros(2, 3))
    assert Objective.of(bon())(group).loss.shape == (2,)
