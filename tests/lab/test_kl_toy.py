"""P3's forward vs reverse KL toy (Tajwar et al. 2024, docs/methods.md §7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from preftune.cli.main import main
from preftune.errors import SpecError
from preftune.lab.kl_toy import P0, KLToyConfig, Q, forward_kl, reverse_kl, run_kl_toy

K = 10  # the "first k steps" of the comparisons below


def test_both_start_at_p0_stay_distributions_and_approach_q() -> None:
    result = run_kl_toy(KLToyConfig(steps=400))
    p0, q = torch.tensor(result.config.p0, dtype=torch.float64), torch.tensor(result.config.q, dtype=torch.float64)
    for masses in (result.forward, result.reverse):
        assert masses.shape == (401, 4)
        assert torch.allclose(masses[0], p0, rtol=0, atol=1e-15)
        assert torch.allclose(masses.sum(-1), torch.ones(401, dtype=torch.float64), rtol=0, atol=1e-12)
        assert torch.allclose(masses[-1], q, atol=1e-3)


def test_the_gradients_are_the_closed_forms() -> None:
    logits = torch.tensor([0.2, -0.3, 0.1, 0.4], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.2, 0.1, 0.6, 0.1], dtype=torch.float64)
    p = torch.softmax(logits.detach(), -1)
    (g_forward,) = torch.autograd.grad(forward_kl(logits, q), logits)
    assert torch.allclose(g_forward, p - q)
    (g_reverse,) = torch.autograd.grad(reverse_kl(logits, q), logits)
    kl = float((p * (p / q).log()).sum())
    assert torch.allclose(g_reverse, p * ((p / q).log() - kl))


def test_first_step_moves_mass_at_the_closed_form_rates() -> None:
    """dp/dt = p ⊙ (Δz - Σ_j p_j Δz_j) with Δz = -∇KL, at p0 = [0.3, 0.3, 0.1, 0.3], q = [0.2, 0.1, 0.6, 0.1].

    Forward: Δz = q - p0 = [-0.1, -0.2, 0.5, -0.2], Σ p Δz = -0.1: dp0 = 0 exactly, dp2 = 0.1·0.6 = 0.06.
    Reverse: Δz_i = -p_i (log(p_i/q_i) - KL): dp0 ≈ +0.032, dp2 ≈ +0.029 (half the forward rate).
    """
    lr = 1e-4
    result = run_kl_toy(KLToyConfig(steps=1, lr=lr))
    p0, q = torch.tensor(P0, dtype=torch.float64), torch.tensor(Q, dtype=torch.float64)
    kl = float((p0 * (p0 / q).log()).sum())
    rates = {"forward": q - p0, "reverse": -p0 * ((p0 / q).log() - kl)}
    for name, masses in (("forward", result.forward), ("reverse", result.reverse)):
        dz = rates[name]
        expected = p0 * (dz - (p0 * dz).sum())
        assert torch.allclose((masses[1] - masses[0]) / lr, expected, atol=1e-3), name
    assert abs(float(rates["forward"] @ p0) + 0.1) < 1e-12  # the forward dp0 vanishes at p0
    assert float(result.reverse[1, 0] - result.reverse[0, 0]) / lr == pytest.approx(0.032, abs=1e-3)


def test_over_the_first_steps_forward_kl_fills_category_2_faster_and_reverse_kl_raises_category_0() -> None:
    """What exact gradient descent on these numbers does (docs/methods.md §7 expects the opposite; see the report).

    Reverse KL's push on a category is weighted by its own mass p_i: category 2 starts at 0.1, so its
    mass grows at half the forward rate at first, while the mass reverse KL takes off categories 1 and 3
    flows partly into category 0, which rises before it settles at q0 = 0.2. Forward KL never raises it.
    """
    result = run_kl_toy(KLToyConfig())
    forward, reverse = result.forward, result.reverse
    assert bool((forward[1 : K + 1, 2] > reverse[1 : K + 1, 2]).all())
    assert bool((reverse[1:6, 0] > P0[0]).all())
    assert float(forward[:, 0].max()) <= P0[0] + 1e-12
    assert float(reverse[:, 0].max()) > P0[0] + 0.02


def test_kl_toy_config_refuses_bad_values() -> None:
    with pytest.raises(SpecError, match="steps must be"):
        KLToyConfig(steps=0)
    with pytest.raises(SpecError, match="lr must be"):
        KLToyConfig(lr=-1.0)
    with pytest.raises(SpecError, match="sum to 1"):
        KLToyConfig(q=(0.5, 0.4, 0.05, 0.0))


def test_cli_kl_toy_writes_png_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "kl-toy", "optim.max_steps=30", f"out={tmp_path}"]) == 0
    assert "reverse" in capsys.readouterr().out
    payload = json.loads((tmp_path / "kl_toy.json").read_text())
    assert len(payload["forward"]) == 31 and len(payload["reverse"][0]) == 4
    assert (tmp_path / "kl_toy.png").read_bytes().startswith(b"\x89PNG")


def test_cli_kl_toy_refuses_a_bad_lr(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab", "kl-toy", "optim.lr=0"]) == 2
    assert capsys.readouterr().err.startswith("error: kl toy: lr must be")


def test_cli_lab_needs_a_study(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lab"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "STUDY" in err
