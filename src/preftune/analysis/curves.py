"""Weight curves of P1's gradient analysis, all by autograd on synthetic pairs (docs/methods.md §3).

- :func:`weight_vs_probability`: w_good and w_bad against the token probability p.
- :func:`weight_vs_margin`: the weights of margin terms (``dpo``...) against the margin h.
- :func:`literal_similarity`: the net push w_good - w_bad on tokens both responses share.

Objectives are given as ``{spec string: Objective}``; the spec labels the rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from preftune.analysis.similarity import shared_token_weight
from preftune.analysis.synthetic import margin_pairs, shared_prefix_pairs, uniform_pairs
from preftune.analysis.table import Analysis, Row, rows
from preftune.analysis.weights import TokenWeights, token_weights
from preftune.objectives import Objective, build
from preftune.objectives.margin import MarginTerm

BETAS = (0.05, 0.1, 0.5)


def probability_grid(points: int = 61, low: float = 1e-3) -> list[float]:
    """p from ``low`` to ``1 - low``, evenly spaced in logit, plus 0.5, 0.9, 0.99, 0.999."""
    edge = math.log(low / (1 - low))
    grid = torch.sigmoid(torch.linspace(edge, -edge, points, dtype=torch.float64)).tolist()
    return sorted({round(p, 12) for p in [*grid, 0.5, 0.9, 0.99, 0.999]})


def _mean_weight(weights: torch.Tensor, n: int) -> list[float]:
    """``[B, n]`` per-token weights -> ``B`` means (all tokens of a row carry one weight here)."""
    return (weights.sum(-1) / n).tolist()


def _weight_rows(spec: str, grid: Sequence[float], weights: TokenWeights, n: int) -> list[Row]:
    """The ``w_good`` and ``w_bad`` rows of one objective over a sweep."""
    assert weights.bad is not None
    return rows(spec, "w_good", grid, _mean_weight(weights.good, n)) + rows(
        spec, "w_bad", grid, _mean_weight(weights.bad, n)
    )


def weight_vs_probability(objectives: Mapping[str, Objective], n: int = 10, p: Sequence[float] = ()) -> Analysis:
    """w_good(p) and w_bad(p) per token when all n tokens of both responses have probability p.

    The reference equals the policy, so the margin h is 0 for every p (DPO's weight is β/2).
    Rows: series ``w_good`` / ``w_bad``, x = p.
    """
    grid = list(p) or probability_grid()
    record = uniform_pairs(torch.tensor(grid, dtype=torch.float64), n)
    table: list[Row] = []
    for spec, objective in objectives.items():
        table += _weight_rows(spec, grid, token_weights(objective, record), n)
    return Analysis(
        name="weight_vs_probability",
        title=f"Per-token weight vs token probability p (all {n} tokens of each response at p; π_ref = π, so h = 0)",
        x="p, the probability of every token of the response",
        value="w_good = -∂L/∂log π(y_w,t) (push-up), w_bad = +∂L/∂log π(y_l,t) (push-down), per token",
        expected="mle 1/n; ul α·p/(1-p)/n unbounded as p→1; exmate λ·exp(A_l)/n ≤ λ/n; dpo β·σ(-βh) flat in p",
        rows=table,
        settings={"n": n, "p": grid},
    )


def margin_terms(objective: Objective) -> list[MarginTerm]:
    """The terms of ``objective`` built on the margin h (dpo, ipo, hinge)."""
    return [t for t in objective.terms if isinstance(t, MarginTerm)]


def margin_grid(limit: float = 50.0, points: int = 201) -> list[float]:
    """h from -limit to +limit (nats), evenly spaced, 0 included."""
    return torch.linspace(-limit, limit, points, dtype=torch.float64).tolist()


def weight_vs_margin(
    objectives: Mapping[str, Objective], n: int = 10, h: Sequence[float] = (), betas: Sequence[float] = BETAS
) -> Analysis:
    """Weights against the margin h: ``dpo(beta=β)`` for each β, then every objective with a margin term.

    Policy tokens sit at p = 0.5; the reference sets h (sums, or per-token means for a term with
    ``average=True``, following the objective's first margin term). Rows: ``w_good`` / ``w_bad``, x = h.
    """
    grid = list(h) or margin_grid()
    sweep = {f"dpo(beta={beta:g})": build(f"dpo(beta={beta!r})") for beta in betas}
    sweep.update({spec: obj for spec, obj in objectives.items() if margin_terms(obj)})
    h_tensor = torch.tensor(grid, dtype=torch.float64)
    table: list[Row] = []
    for spec, objective in sweep.items():
        record = margin_pairs(h_tensor, n, average=margin_terms(objective)[0].average)
        table += _weight_rows(spec, grid, token_weights(objective, record), n)
    return Analysis(
        name="dpo_weight_vs_margin",
        title=f"Per-token weight vs margin h (n = {n} tokens per response, policy tokens at p = 0.5)",
        x="h = (S_w - S_ref,w) - (S_l - S_ref,l), nats (per-token means for terms with average=True)",
        value="w_good / w_bad per token",
        expected="dpo: w_good = w_bad = β·σ(-βh): β/2 at h = 0, → β for h ≪ 0, → 0 once the pair is learnt",
        rows=table,
        settings={"n": n, "h": grid, "sweep": {f"dpo(beta={beta:g})": float(beta) for beta in betas}, "policy_p": 0.5},
    )


def literal_similarity(objectives: Mapping[str, Objective], n: int = 10) -> Analysis:
    """Net weight w_good - w_bad on tokens shared by both responses, against the shared fraction s = k/n.

    Pairs of n tokens share their first k tokens (same token, same context; k = 1..n), see
    :func:`~preftune.analysis.synthetic.shared_prefix_pairs`. Rows, x = s: ``net_per_token`` (mean over
    shared tokens), ``net_total`` (sum over them), ``gross_per_token`` (mean of w_good + w_bad there:
    the push each side exerts before they cancel).
    """
    setup = {"p_shared": 0.6, "p_chosen": 0.5, "p_rejected": 0.3, "ref_shift": 0.2}
    record, shared = shared_prefix_pairs(n, **setup)
    k = shared.sum(-1).to(torch.float64)
    s = (k / n).tolist()
    table: list[Row] = []
    for spec, objective in objectives.items():
        weights = token_weights(objective, record)
        assert weights.bad is not None
        net = shared_token_weight(weights, shared)
        gross = (weights.good + weights.bad).masked_fill(~shared, 0.0)
        table += rows(spec, "net_per_token", s, (net.sum(-1) / k).tolist())
        table += rows(spec, "net_total", s, net.sum(-1).tolist())
        table += rows(spec, "gross_per_token", s, (gross.sum(-1) / k).tolist())
    return Analysis(
        name="literal_similarity",
        title=f"Net weight on tokens both responses share (shared prefix of k of n = {n} tokens)",
        x="s = k/n, the fraction of tokens the chosen and rejected responses share",
        value="net = w_good - w_bad on a shared token (>0: raised, <0: lowered, 0: the pushes cancel)",
        expected="dpo: net 0 exactly (one scalar on both responses); mle + penalty (ul, exmate): net ≠ 0",
        rows=table,
        settings={"n": n, **setup},
    )
