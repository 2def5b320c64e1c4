"""The report's curves: synthetic sweeps against the closed forms of docs/methods.md §3."""

from __future__ import annotations

import math

import pytest
import torch

from preftune.analysis.curves import literal_similarity, probability_grid, weight_vs_margin, weight_vs_probability
from preftune.analysis.logit_space import logit_gradients, logit_space, zipf_rest
from preftune.analysis.synthetic import margin_pairs, uniform_pairs
from preftune.objectives import margin, parse

SPECS = ["mle", "ul", "exmate", "dpo", "dpo+exmate"]


@pytest.fixture(scope="module")
def objectives() -> dict:
    return {spec: parse(spec) for spec in SPECS}


@pytest.fixture(scope="module")
def by_probability(objectives: dict):
    return weight_vs_probability(objectives, n=10)


def test_probability_grid_covers_both_ends_and_the_headline_points() -> None:
    grid = probability_grid()
    assert grid == sorted(grid) and grid[0] == pytest.approx(1e-3) and grid[-1] == pytest.approx(0.999)
    for p in (0.5, 0.9, 0.99, 0.999):
        assert p in grid


def test_synthetic_records_set_what_they_promise() -> None:
    record = uniform_pairs(torch.tensor([0.2, 0.7]), n=4)
    torch.testing.assert_close(record.chosen.mean, torch.log(torch.tensor([0.2, 0.7], dtype=torch.float64)))
    torch.testing.assert_close(margin(record, average=False), torch.zeros(2, dtype=torch.float64))
    h = torch.tensor([-30.0, 0.0, 12.5], dtype=torch.float64)
    for average in (False, True):
        shifted = margin_pairs(h, n=5, average=average)
        torch.testing.assert_close(margin(shifted, average=average), h)
        assert shifted.ref_chosen is not None and shifted.ref_chosen.tokens is not None
        assert bool((shifted.ref_chosen.tokens <= 0).all())


def test_weight_vs_probability_follows_the_table(by_probability) -> None:
    n, lam, alpha, beta = 10, 0.05, 1.0, 0.1
    grid, _ = by_probability.series("ul", "w_bad")
    assert grid == probability_grid()
    table = {
        ("mle", "w_good"): lambda p: 1 / n,
        ("mle", "w_bad"): lambda p: 0.0,
        ("ul", "w_good"): lambda p: 1 / n,
        ("ul", "w_bad"): lambda p: alpha * p / (1 - p) / n,
        ("exmate", "w_bad"): lambda p: lam * p / n,  # exp(A_l) = p when every token is at p
        ("dpo", "w_good"): lambda p: beta / 2,  # h = 0
        ("dpo", "w_bad"): lambda p: beta / 2,
        ("dpo+exmate", "w_good"): lambda p: beta / 2 + 1 / n,
        ("dpo+exmate", "w_bad"): lambda p: beta / 2 + lam * p / n,
    }
    for (spec, series), formula in table.items():
        xs, values = by_probability.series(spec, series)
        assert values == pytest.approx([formula(p) for p in xs], rel=1e-6, abs=1e-15), (spec, series)
    _, exmate_bad = by_probability.series("exmate", "w_bad")
    assert max(exmate_bad) <= lam / n
    assert by_probability.at("ul", "w_bad", 0.999) > 9 * by_probability.at("ul", "w_bad", 0.99)


def test_dpo_weight_vs_margin_is_beta_sigmoid(objectives: dict) -> None:
    analysis = weight_vs_margin(objectives, n=10, h=[-50.0, -3.0, 0.0, 7.0, 50.0])
    assert analysis.objectives() == ["dpo(beta=0.05)", "dpo(beta=0.1)", "dpo(beta=0.5)", "dpo", "dpo+exmate"]
    for beta in (0.05, 0.1, 0.5):
        for h in (-50.0, -3.0, 0.0, 7.0, 50.0):
            expected = beta / (1 + math.exp(beta * h))
            assert analysis.at(f"dpo(beta={beta:g})", "w_good", h) == pytest.approx(expected, rel=1e-9)
            assert analysis.at(f"dpo(beta={beta:g})", "w_bad", h) == pytest.approx(expected, rel=1e-9)
    # dpo+exmate: the dpo scalar plus 1/n on good tokens (policy tokens at p = 0.5).
    assert analysis.at("dpo+exmate", "w_good", 7.0) == pytest.approx(0.1 / (1 + math.exp(0.7)) + 0.1)
    averaged = weight_vs_margin({"dpo(average=True)": parse("dpo(average=True)")}, n=10, h=[2.0], betas=())
    assert averaged.at("dpo(average=True)", "w_good", 2.0) == pytest.approx(0.1 / (1 + math.exp(0.2)) / 10)


def test_logit_gradients_match_the_closed_form() -> None:
    rest = zipf_rest(vocab_size=50, exponent=1.2)
    p = torch.tensor([0.01, 0.6, 0.99], dtype=torch.float64)
    w = torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)
    probs = torch.cat([p[:, None], (1 - p)[:, None] * rest[None, :]], dim=-1)
    onehot = torch.zeros_like(probs)
    onehot[:, 0] = 1
    up = logit_gradients(w, p, rest, "up")
    torch.testing.assert_close(up, -w[:, None] * (onehot - probs))
    torch.testing.assert_close(logit_gradients(w, p, rest, "down"), -up)
    torch.testing.assert_close(up.sum(-1), torch.zeros(3, dtype=torch.float64))


def test_logit_space_splits_the_push_and_keeps_each_objectives_weight(by_probability) -> None:
    analysis = logit_space(by_probability, vocab_size=1000, top_k=5)
    for spec in ("ul", "exmate", "dpo+exmate"):
        for push, series in (("up", "w_good"), ("down", "w_bad")):
            ps, w = by_probability.series(spec, series)
            _, target = analysis.series(spec, f"{push}/target")
            assert target == pytest.approx([wi * (1 - p) for wi, p in zip(w, ps, strict=True)], rel=1e-9)
            assert analysis.series(spec, f"{push}/rest")[1] == pytest.approx(target, rel=1e-9)
            groups = [analysis.series(spec, f"{push}/{g}")[1] for g in ("top_k", "middle", "tail")]
            assert [sum(parts) for parts in zip(*groups, strict=True)] == pytest.approx(target, rel=1e-9)
    # UL's weight blows up, its logit push stays below α/n; ExMATE's fades as p → 1.
    assert analysis.at("ul", "down/target", 0.999) <= 1.0 / 10
    assert analysis.at("ul", "down/tail", 0.999) > 1000 * analysis.at("exmate", "down/tail", 0.999)
    assert max(analysis.series("mle", "down/target")[1]) == 0.0
    assert analysis.settings["tail_tokens"] == int((zipf_rest(1000) < 1 / 1000).sum())


def test_literal_similarity_cancels_for_dpo_only(objectives: dict) -> None:
    analysis = literal_similarity(objectives, n=8)
    xs, dpo = analysis.series("dpo", "net_per_token")
    assert xs == pytest.approx([k / 8 for k in range(1, 9)])
    assert all(v == 0.0 for v in dpo)
    assert all(v > 0 for v in analysis.series("dpo", "gross_per_token")[1])
    assert all(v == pytest.approx(1 / 8) for v in analysis.series("mle", "net_per_token")[1])
    # ul at p_shared = 0.6: 1/n - α·0.6/0.4/n < 0; exmate: 1/n - λ·exp(A_l)/n > 0.
    assert all(v == pytest.approx((1 - 1.5) / 8) for v in analysis.series("ul", "net_per_token")[1])
    assert all(0 < v < 1 / 8 for v in analysis.series("exmate", "net_per_token")[1])
    assert analysis.series("dpo+exmate", "net_per_token")[1] == pytest.approx(
        analysis.series("exmate", "net_per_token")[1]
    )
