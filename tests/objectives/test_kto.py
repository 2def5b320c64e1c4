"""``kto``'s own contract beyond TRL parity (tests/objectives/test_trl_kto_parity.py): its parameters are checked, its
reference point is a clamped constant, and a record without the KL estimate is refused by name."""

from __future__ import annotations

import pytest
import torch

from preftune.errors import SpecError
from preftune.objectives import KTO, PairRecord, SequenceLogProbs, parse


def _record(kl: torch.Tensor | None) -> PairRecord:
    s = lambda values: SequenceLogProbs(sum=torch.tensor(values, requires_grad=True), count=torch.ones(2))  # noqa: E731
    return PairRecord(s([-3.0, -5.0]), s([-4.0, -2.0]), s([-3.5, -5.0]), s([-4.0, -3.0]), kl_estimate=kl)


def test_loss_by_hand() -> None:
    """β = 1, z0 = 0.5: r_w = (0.5, 0), r_l = (0, 1); ½(σ(-(r_w - z0)) + 2·σ(-(z0 - r_l)))."""
    loss = KTO(beta=1.0, undesirable_weight=2.0).loss(_record(torch.tensor(0.5)))
    sig = torch.sigmoid
    expected = 0.5 * torch.stack(
        [sig(torch.tensor(0.0)) + 2 * sig(torch.tensor(-0.5)), sig(torch.tensor(0.5)) + 2 * sig(torch.tensor(0.5))]
    )
    torch.testing.assert_close(loss, expected)


def test_reference_point_is_clamped_at_zero_and_carries_no_gradient() -> None:
    negative = KTO().loss(_record(torch.tensor(-3.0)))
    torch.testing.assert_close(negative, KTO().loss(_record(torch.tensor(0.0))))
    kl = torch.tensor(0.7, requires_grad=True)
    KTO().loss(_record(kl)).sum().backward()
    assert kl.grad is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("kto(beta=0)", "kto: beta must be > 0"),
        ("kto(desirable_weight=-1)", "kto: desirable_weight must be >= 0"),
        ("kto(undesirable_weight=True)", "must be a number"),
        ("kto(average=True)", "kto has no parameter 'average'"),
    ],
)
def test_parameters_are_checked(spec: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse(spec)


def test_a_record_without_the_estimate_is_refused_by_name() -> None:
    with pytest.raises(SpecError, match="kto' needs the KL estimate of the batch's mismatched pairs"):
        parse("kto")(_record(None))
    with pytest.raises(SpecError, match="kl_estimate must be a one-value tensor"):
        _record(torch.zeros(2))


def test_capabilities_fit_unpaired_data_and_need_mismatched_pairs() -> None:
    both = parse("kto + 0.5*exmate + bcr")
    assert both.needs_mismatched and both.needs_reference and both.needs_rejected and both.fits_unpaired
    assert not parse("kto + dpo").fits_unpaired and not parse("dpo").needs_mismatched
    assert "kl" in both(_record(torch.tensor(0.2))).metrics
