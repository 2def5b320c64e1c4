"""Forward vs reverse KL on four categories (P3, Tajwar et al. 2024, §6; docs/methods.md §7).

p_θ = softmax(z) with logits z initialised to log p0, p0 = [0.3, 0.3, 0.1, 0.3] **[our reading of
"p0 as softmax logits": the logits start at log p0, so p starts at p0]**; target q = [0.2, 0.1, 0.6, 0.1].
Plain gradient descent on z, separately for

- forward KL(q‖p) = Σ_i q_i (log q_i - log p_i): maximum likelihood on samples of q, mode covering;
  ∂/∂z = p - q.
- reverse KL(p‖q) = Σ_i p_i (log p_i - log q_i): mode seeking (on-policy RL with reward log q);
  ∂/∂z_i = p_i (log(p_i/q_i) - KL(p‖q)).

Each category's mass is recorded after every step.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from preftune.errors import SpecError

P0 = (0.3, 0.3, 0.1, 0.3)
Q = (0.2, 0.1, 0.6, 0.1)


def _distribution(name: str, values: object) -> tuple[float, ...]:
    """``values`` as a tuple of ≥ 2 positive finite probabilities summing to 1 (within 1e-6)."""
    if not isinstance(values, tuple | list) or len(values) < 2:
        raise SpecError(f"kl toy: {name} must be a list of at least two probabilities, got {values!r}")
    ok = all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
    if not ok or abs(sum(values) - 1.0) > 1e-6:
        raise SpecError(f"kl toy: {name} must hold positive probabilities that sum to 1, got {list(values)}")
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class KLToyConfig:
    """The toy, checked on construction: ``steps`` gradient steps of size ``lr`` from ``p0`` towards ``q``."""

    steps: int = 100
    lr: float = 0.5
    p0: tuple[float, ...] = P0
    q: tuple[float, ...] = Q

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or isinstance(self.steps, bool) or self.steps < 1:
            raise SpecError(f"kl toy: steps must be an integer ≥ 1, got {self.steps!r}")
        lr = self.lr
        if not (isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr) and 0 < lr <= 100):
            raise SpecError(f"kl toy: lr must be a number in (0, 100], got {lr!r}")
        object.__setattr__(self, "p0", _distribution("p0", self.p0))
        object.__setattr__(self, "q", _distribution("q", self.q))
        if len(self.p0) != len(self.q):
            raise SpecError(f"kl toy: p0 has {len(self.p0)} categories and q {len(self.q)}")


def forward_kl(logits: Tensor, q: Tensor) -> Tensor:
    """KL(q‖p) for p = softmax(logits ``[V]``), q ``[V]``: a scalar."""
    return (q * (q.log() - torch.log_softmax(logits, -1))).sum()


def reverse_kl(logits: Tensor, q: Tensor) -> Tensor:
    """KL(p‖q) for p = softmax(logits ``[V]``), q ``[V]``: a scalar."""
    logp = torch.log_softmax(logits, -1)
    return (logp.exp() * (logp - q.log())).sum()


def descend(divergence: str, config: KLToyConfig) -> Tensor:
    """``[steps+1, V]`` p after each plain gradient step on ``divergence`` (``"forward"``/``"reverse"``)."""
    loss_fn = {"forward": forward_kl, "reverse": reverse_kl}[divergence]
    q = torch.tensor(config.q, dtype=torch.float64)
    logits = torch.tensor(config.p0, dtype=torch.float64).log().requires_grad_(True)
    masses = [torch.softmax(logits.detach(), -1)]
    for _ in range(config.steps):
        (grad,) = torch.autograd.grad(loss_fn(logits, q), logits)
        with torch.no_grad():
            logits -= config.lr * grad
        masses.append(torch.softmax(logits.detach(), -1))
    return torch.stack(masses)


def first_step_at(masses: Tensor, category: int, level: float) -> int | None:
    """The first step at which ``masses[:, category]`` reaches ``level``, ``None`` if never."""
    hit = (masses[:, category] >= level).nonzero()
    return int(hit[0]) if len(hit) else None


@dataclass(frozen=True)
class KLToyResult:
    """Masses ``[steps+1, V]`` under forward and reverse KL descent, from the same p0."""

    config: KLToyConfig
    forward: Tensor
    reverse: Tensor

    def milestones(self, level: float = 0.5) -> dict[str, Any]:
        """For each KL: p at the end, the peak of category 0 (and its step), first step with p_2 ≥ ``level``."""
        out: dict[str, Any] = {}
        for name, masses in (("forward", self.forward), ("reverse", self.reverse)):
            out[name] = {
                "final": masses[-1].tolist(),
                "max_category_0": float(masses[:, 0].max()),
                "argmax_category_0": int(masses[:, 0].argmax()),
                f"steps_to_category_2_at_{level:g}": first_step_at(masses, 2, level),
            }
        return out

    def to_json(self) -> dict[str, Any]:
        """Config, milestones and every step's masses, as plain numbers."""
        return {
            "study": "P3 forward vs reverse KL toy (Tajwar et al. 2024)",
            "config": asdict(self.config),
            "milestones": self.milestones(),
            "forward": self.forward.tolist(),
            "reverse": self.reverse.tolist(),
        }


def run_kl_toy(config: KLToyConfig) -> KLToyResult:
    """Descend forward and reverse KL from the same p0 (P3's mode-covering vs mode-seeking toy)."""
    return KLToyResult(config, descend("forward", config), descend("reverse", config))
