"""Where a token weight lands in logit space (P1's multi-class view; docs/methods.md §3).

A weight w on log π(target) becomes, through the softmax, ∂L/∂z_j = -w (1[j = target] - p_j) for a
push-up (good token) and the opposite for a push-down (bad token): the target logit moves by
w (1 - p) and every other logit by w p_j the other way, so the rest of the vocabulary receives
w (1 - p) in total, split in proportion to its probabilities. The vocabulary here is Zipfian over
V = 49,152 tokens (SmolLM2's vocabulary): the target has probability p and the other V - 1 tokens
share 1 - p as r^(-s) by rank r. Gradients are taken by autograd on the logits.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from preftune.analysis.table import Analysis, Row, rows
from preftune.errors import SpecError

SMOLLM2_VOCAB = 49_152
Push = Literal["up", "down"]


def zipf_rest(vocab_size: int = SMOLLM2_VOCAB, exponent: float = 1.0) -> Tensor:
    """``[V - 1]`` probabilities r^(-s) / Σ r^(-s) of the non-target tokens by rank r = 1..V-1 (sum 1)."""
    if vocab_size < 3:
        raise SpecError(f"the vocabulary needs at least 3 tokens, got {vocab_size}")
    ranks = torch.arange(1, vocab_size, dtype=torch.float64)
    weights = ranks ** (-exponent)
    return weights / weights.sum()


def logit_gradients(w: Tensor, p: Tensor, rest: Tensor, push: Push) -> Tensor:
    """``[P, V]`` ∂L/∂z for weight ``w[i]`` on a target of probability ``p[i]`` (target at index 0).

    ``rest`` ``[V - 1]`` is the shape of the other tokens' distribution (scaled by 1 - p). The loss is
    L = -w·log softmax(z)_target for ``push="up"`` and +w·log softmax(z)_target for ``"down"``.
    """
    probs = torch.cat([p[:, None], (1 - p)[:, None] * rest[None, :]], dim=-1).to(torch.float64)
    logits = probs.log().requires_grad_(True)
    sign = -1.0 if push == "up" else 1.0
    with torch.enable_grad():
        loss = (sign * w.to(torch.float64) * torch.log_softmax(logits, dim=-1)[:, 0]).sum()
        (grad,) = torch.autograd.grad(loss, [logits])
    return grad


def rank_grid(count: int, points: int = 80) -> list[int]:
    """About ``points`` ranks 1..count, evenly spaced in log, for plotting per-token curves."""
    grid = torch.logspace(0, torch.log10(torch.tensor(float(count))).item(), points).round().long()
    return sorted(set(grid.clamp(1, count).tolist()))


def logit_space(
    weights: Analysis,
    vocab_size: int = SMOLLM2_VOCAB,
    exponent: float = 1.0,
    top_k: int = 10,
    rank_p: float = 0.9,
) -> Analysis:
    """Logit-space split of each objective's weights from :func:`~preftune.analysis.curves.weight_vs_probability`.

    For the good token (push-up, w = w_good) and the bad token (push-down, w = w_bad) at each p, rows
    (magnitudes, x = p): ``{up,down}/target`` |∂L/∂z_target| = w(1 - p), ``/rest`` the total on the
    other tokens (equal to it), and that total split into ``/top_k`` (the k likeliest other tokens),
    ``/tail`` (tokens below uniform, p_j < 1/V at p → 0: the nearly unused ones) and ``/middle``. Rows
    ``{up,down}/per_token`` (x = rank among the other tokens) give |∂L/∂z_j| at p = ``rank_p``.
    """
    rest = zipf_rest(vocab_size, exponent)
    tail = torch.cat([torch.zeros(1, dtype=torch.bool), rest < 1.0 / vocab_size])
    top = torch.zeros(vocab_size, dtype=torch.bool)
    top[1 : top_k + 1] = True
    middle = ~(top | tail)
    middle[0] = False
    others = torch.ones(vocab_size, dtype=torch.bool)
    others[0] = False
    groups = torch.stack([others, top, middle, tail], dim=-1).to(torch.float64)  # [V, 4]
    ranks = rank_grid(vocab_size - 1)
    grid = sorted({r.x for r in weights.rows})
    at_p = min(grid, key=lambda x: abs(x - rank_p)) if grid else rank_p
    table: list[Row] = []
    for spec in weights.objectives():
        for push, series in (("up", "w_good"), ("down", "w_bad")):
            ps, ws = weights.series(spec, series)
            p, w = torch.tensor(ps, dtype=torch.float64), torch.tensor(ws, dtype=torch.float64)
            grad = logit_gradients(w, p, rest, push).abs_()  # type: ignore[arg-type]
            sums = grad @ groups  # [P, 4]: rest, top_k, middle, tail
            table += rows(spec, f"{push}/target", ps, grad[:, 0].tolist())
            for i, group in enumerate(("rest", "top_k", "middle", "tail")):
                table += rows(spec, f"{push}/{group}", ps, sums[:, i].tolist())
            at = min(range(len(ps)), key=lambda i: abs(ps[i] - at_p))
            table += rows(spec, f"{push}/per_token", ranks, grad[at, ranks].tolist())
    share = {"top_k": rest[:top_k].sum().item(), "tail": rest[tail[1:]].sum().item()}
    return Analysis(
        name="logit_space",
        title=f"Logit-space gradient of one weighted token (Zipf s = {exponent:g} over V = {vocab_size:,} tokens)",
        x="p, the target token's probability (series */per_token: rank of a non-target token)",
        value="|∂L/∂z|: on the target logit, summed over a group of other tokens, or per token",
        expected="∂L/∂z_j = ∓w(1[j=target] − p_j): the target logit moves by w(1−p), each other logit by w·p_j "
        "the other way (push-up lowers them, push-down raises them)",
        rows=table,
        settings={
            "vocab_size": vocab_size,
            "zipf_exponent": exponent,
            "top_k": top_k,
            "tail_tokens": int(tail.sum()),
            "tail_definition": "non-target tokens with p_j < 1/V in the Zipf shape (p -> 0)",
            "share_of_rest": {**share, "middle": 1.0 - share["top_k"] - share["tail"]},
            "per_token_at_p": at_p,
        },
    )
