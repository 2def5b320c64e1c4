"""P3's didactic bandit (Tajwar et al. 2024, §4.1; docs/methods.md §7), trained with preftune's own objectives.

Environment (fixed by ``env_seed``):

- 100 actions a = 0..99. The reference π_ref is the histogram of 10,000 draws of
  tanh(Cauchy(loc=-0.7, scale=0.4)) binned on [-1, 1] into 100 bins: its peak is near a = 20.
  **[our choice]** A floor of 1e-6 is added to every bin before renormalising, so that no action
  has probability zero (log π_ref stays finite and every action stays reachable).
- Reward, far from the reference peak r(a) = exp(-((a-70)/10)²), near it exp(-((a-20)/10)²).
- 10 training contexts drawn from U[0, 1]^100.

Policy: ``log π_θ(·|x) = log_softmax(log π_ref + f_θ(x))`` with f_θ a linear layer initialised to
output exactly zero, so that the policy starts *exactly* at π_ref.

Training (docs/methods.md §4, P3's Algorithm 1 with one pass per batch): each step takes C actions per
context, either read from a fixed dataset drawn once from π_ref (``offline``, re-read in shuffled
epochs) or sampled afresh from the current policy (``on_policy``). Group objectives (``bon``,
``bon_neg``, ``rwr``, ``reinforce``) read a :class:`GroupRecord` of the C samples (``[K, C]``, one
"token" per response: the action's log-prob); pairwise ones (``dpo``, ``ipo``) read best vs worst
as a :class:`PairRecord`. Reference log-probs come from π_ref. Adam. The score is the exact true
reward E_{a∼π}[r(a)] (a sum over actions, averaged over contexts), tracked against gradient steps
and samples drawn.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from preftune.errors import SpecError
from preftune.files import strict_json
from preftune.lab.validate import choose, integers_at_least, number_in
from preftune.objectives import Objective, PairRecord, Record, SequenceLogProbs, build, record_for

N_ACTIONS = 100
METHODS = ("bon", "bon_neg", "rwr", "reinforce", "dpo", "ipo")
REGIMES = ("offline", "on_policy")
PEAKS = {"far": 70.0, "near": 20.0}
REWARD_WIDTH = 10.0
CAUCHY_LOC, CAUCHY_SCALE = -0.7, 0.4
# Integer settings of BanditConfig and their least values (C ≥ 2: pairs and leave-one-out baselines need two).
_MINIMUMS = {
    "seeds": 1,
    "steps": 1,
    "samples_per_context": 2,
    "contexts": 1,
    "offline_groups": 1,
    "reference_draws": 1,
    "snapshots": 2,
    "env_seed": 0,
}


@dataclass(frozen=True)
class BanditConfig:
    """One bandit study: every method × regime, trained once per seed; checked on construction.

    Attributes:
        peak: ``"far"`` (reward peak at a = 70, where π_ref has little mass) or ``"near"`` (a = 20).
        methods: objective names from :data:`METHODS`, each with its preftune defaults.
        regimes: ``"offline"`` and/or ``"on_policy"``.
        seeds: training seeds 0..seeds-1 (they change the samples; the environment is fixed).
        steps: gradient steps per run.
        samples_per_context: C, actions drawn per context per step (≥ 2: pairs and baselines need two).
        contexts: K, training contexts drawn from U[0, 1]^100.
        lr: Adam's learning rate.
        offline_groups: groups of C actions per context in the offline dataset (drawn once from π_ref).
        reference_draws: Cauchy draws behind the π_ref histogram.
        floor: probability added to every bin of π_ref before renormalising.
        threshold: true reward that counts as reached (steps and samples to reach it are reported).
        snapshots: how many policy histograms are kept, evenly spaced from step 0 to the last.
        env_seed: seed of π_ref's draws and of the contexts.
    """

    peak: str = "far"
    methods: tuple[str, ...] = METHODS
    regimes: tuple[str, ...] = REGIMES
    seeds: int = 5
    steps: int = 300
    samples_per_context: int = 4
    contexts: int = 10
    lr: float = 1e-3
    offline_groups: int = 50
    reference_draws: int = 10_000
    floor: float = 1e-6
    threshold: float = 0.5
    snapshots: int = 4
    env_seed: int = 0

    def __post_init__(self) -> None:
        if self.peak not in PEAKS:
            raise SpecError(f"bandit: peak must be one of {', '.join(PEAKS)}, got {self.peak!r}")
        object.__setattr__(self, "methods", choose("bandit", "methods", self.methods, METHODS))
        object.__setattr__(self, "regimes", choose("bandit", "regimes", self.regimes, REGIMES))
        integers_at_least("bandit", self, _MINIMUMS)
        number_in("bandit", "lr", self.lr, 0.0, 10.0)
        number_in("bandit", "floor", self.floor, 0.0, 1.0)
        number_in("bandit", "threshold", self.threshold, 0.0, 1.0)

    def snapshot_steps(self) -> tuple[int, ...]:
        """The steps whose policy histogram is kept: evenly spaced, first 0, last ``steps``."""
        n = min(self.snapshots, self.steps + 1)
        return tuple(sorted({round(i * self.steps / (n - 1)) for i in range(n)}))


@dataclass(frozen=True)
class Bandit:
    """The environment.

    Attributes:
        reference: ``[N]`` π_ref, the floored histogram (sums to 1).
        reference_logprobs: ``[N]`` log π_ref as the policy computes it at step 0 (bit for bit).
        rewards: ``[N]`` r(a).
        contexts: ``[K, N]`` the training contexts.
    """

    reference: Tensor
    reference_logprobs: Tensor
    rewards: Tensor
    contexts: Tensor


def reference_histogram(draws: int, floor: float, generator: torch.Generator, n_bins: int = N_ACTIONS) -> Tensor:
    """``[n_bins]`` π_ref: histogram of tanh(Cauchy(-0.7, 0.4)) on [-1, 1] in ``n_bins`` bins (N by default),
    + ``floor``, renormalised.

    Cauchy draws by the inverse CDF, loc + scale·tan(π(u - 1/2)); tanh(±large) = ±1 falls in the end bins.
    """
    u = torch.rand(draws, generator=generator, dtype=torch.float64)
    a = torch.tanh(CAUCHY_LOC + CAUCHY_SCALE * torch.tan(math.pi * (u - 0.5)))
    bins = ((a + 1.0) / 2.0 * n_bins).floor().long().clamp(0, n_bins - 1)
    probs = torch.bincount(bins, minlength=n_bins).double() / draws + floor
    return probs / probs.sum()


def reward_vector(peak: str) -> Tensor:
    """``[N]`` r(a) = exp(-((a - centre)/10)²), centre 70 (far) or 20 (near)."""
    actions = torch.arange(N_ACTIONS, dtype=torch.float64)
    return torch.exp(-(((actions - PEAKS[peak]) / REWARD_WIDTH) ** 2))


def make_bandit(config: BanditConfig) -> Bandit:
    """The environment of ``config``: π_ref, r and the K contexts, all from ``env_seed``."""
    generator = torch.Generator().manual_seed(config.env_seed)
    reference = reference_histogram(config.reference_draws, config.floor, generator)
    contexts = torch.rand(config.contexts, N_ACTIONS, generator=generator, dtype=torch.float64)
    ref_logits = reference.log()
    return Bandit(reference, torch.log_softmax(ref_logits, -1), reward_vector(config.peak), contexts)


class BanditPolicy(nn.Module):
    """π_θ(·|x) = softmax(log π_ref + f_θ(x)), f_θ linear and zero at initialisation (P3 §4.1)."""

    def __init__(self, reference: Tensor) -> None:
        super().__init__()
        self.register_buffer("ref_logits", reference.log())
        self.shift = nn.Linear(N_ACTIONS, N_ACTIONS, dtype=torch.float64)
        nn.init.zeros_(self.shift.weight)
        nn.init.zeros_(self.shift.bias)

    def forward(self, contexts: Tensor) -> Tensor:
        """``[K, N]`` log π_θ(a|x) for contexts ``[K, N]``."""
        return torch.log_softmax(self.ref_logits + self.shift(contexts), dim=-1)


def true_reward(logprobs: Tensor, rewards: Tensor) -> float:
    """E_{a∼π}[r(a)], exact: Σ_a π(a|x)·r(a) ``[K]``, averaged over the K contexts."""
    return float((logprobs.exp() @ rewards).mean())


def _token_record(logprobs: Tensor) -> SequenceLogProbs:
    """``[K, C]`` action log-probs as responses of one token each (tokens ``[K, C, 1]``)."""
    tokens = logprobs.unsqueeze(-1)
    return SequenceLogProbs.from_tokens(tokens, torch.ones_like(tokens, dtype=torch.bool))


def make_record(objective: Objective, logprobs: Tensor, reference: Tensor, actions: Tensor, rewards: Tensor) -> Record:
    """The record ``objective`` reads for ``actions [K, C]`` under the policy ``logprobs [K, N]``.

    Group objectives: the C samples with their rewards ``[K, C]`` and reference log-probs.
    Pairwise objectives: best vs worst reward of each context's C samples (first on ties), ``[K]`` pairs.
    """
    r = rewards[actions]  # [K, C]
    if objective.record_type is PairRecord:
        best, worst = r.argmax(-1, keepdim=True), r.argmin(-1, keepdim=True)
        actions = torch.cat([actions.gather(-1, best), actions.gather(-1, worst)], dim=-1)  # [K, 2]
    ref = reference.expand(actions.shape[0], -1)
    policy = _token_record(logprobs.gather(-1, actions))
    return record_for(objective.record_type, policy, _token_record(ref.gather(-1, actions)), r)


@dataclass(frozen=True)
class Run:
    """One training run. ``rewards``: ``[steps+1]`` true reward after t steps; ``histograms``:
    ``[snapshots, N]`` π_θ averaged over contexts at :meth:`BanditConfig.snapshot_steps`."""

    rewards: Tensor
    histograms: Tensor


def samples_drawn(config: BanditConfig, regime: str) -> Tensor:
    """``[steps+1]`` samples drawn before the reward at step t: K·C per step on-policy; offline, the
    distinct dataset samples read so far (the dataset counts as drawn as it is first read)."""
    steps = torch.arange(config.steps + 1)
    if regime == "offline":
        steps = steps.clamp(max=config.offline_groups)
    return steps * config.contexts * config.samples_per_context


def train(bandit: Bandit, objective: Objective, regime: str, config: BanditConfig, seed: int) -> Run:
    """Train one policy with ``objective`` for ``config.steps`` Adam steps; the exact reward after each."""
    generator = torch.Generator().manual_seed(seed)
    k, c, groups = config.contexts, config.samples_per_context, config.offline_groups
    policy = BanditPolicy(bandit.reference)
    optimiser = torch.optim.Adam(policy.parameters(), lr=config.lr)
    if regime == "offline":  # drawn once from π_ref: [K, G, C]
        dataset = torch.multinomial(bandit.reference.expand(k, -1), groups * c, True, generator=generator)
        dataset = dataset.view(k, groups, c)
    snapshots, rewards, histograms = set(config.snapshot_steps()), [], []
    order = torch.empty(0, dtype=torch.long)
    for step in range(config.steps + 1):
        logprobs = policy(bandit.contexts)  # [K, N]
        rewards.append(true_reward(logprobs.detach(), bandit.rewards))
        if step in snapshots:
            histograms.append(logprobs.detach().exp().mean(0))
        if step == config.steps:
            break
        if regime == "offline":
            if step % groups == 0:  # a new epoch: reshuffle the groups
                order = torch.randperm(groups, generator=generator)
            actions = dataset[:, int(order[step % groups])]
        else:
            actions = torch.multinomial(logprobs.detach().exp(), c, True, generator=generator)  # [K, C]
        record = make_record(objective, logprobs, bandit.reference_logprobs, actions, bandit.rewards)
        optimiser.zero_grad()
        objective(record).loss.mean().backward()
        optimiser.step()
    return Run(torch.tensor(rewards, dtype=torch.float64), torch.stack(histograms))


# Two-sided 97.5% quantiles of Student's t for 1..30 degrees of freedom.
# fmt: off
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)
# fmt: on


def t_quantile(dof: int) -> float:
    """Student's t 0.975 quantile: a table to 30 degrees of freedom, then z + (z³ + z)/(4·dof)."""
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * dof)


def mean_ci(values: Tensor) -> tuple[float, float]:
    """Mean and half-width of its 95% t interval over ``[S]`` values (NaN half-width for S = 1)."""
    n = values.numel()
    mean = float(values.mean())
    if n < 2:
        return mean, math.nan
    return mean, t_quantile(n - 1) * float(values.std(correction=1)) / math.sqrt(n)


@dataclass(frozen=True)
class Curve:
    """One method × regime over all seeds.

    Attributes:
        rewards: ``[S, steps+1]`` exact true reward after t steps, per seed.
        samples: ``[steps+1]`` samples drawn by then (:func:`samples_drawn`).
        histograms: ``[snapshots, N]`` π_θ averaged over contexts and seeds.
    """

    method: str
    regime: str
    rewards: Tensor
    samples: Tensor
    histograms: Tensor


@dataclass(frozen=True)
class SummaryRow:
    """Final reward (mean, 95% CI half-width over seeds) and the median steps/samples to the threshold
    (``None`` when fewer than half the seeds reach it; ``reached`` says how many do)."""

    method: str
    regime: str
    final: float
    ci: float
    reached: int
    seeds: int
    steps_to_threshold: float | None
    samples_to_threshold: float | None


def _median_first_reach(rewards: Tensor, samples: Tensor, threshold: float) -> tuple[int, float | None, float | None]:
    """How many seeds reach ``threshold``, and the median first step (and its samples) over all seeds.

    A seed that never reaches it counts as ∞; with an even number of seeds the lower median is taken.
    """
    hit = rewards >= threshold  # [S, T+1]
    never = torch.full((rewards.shape[0],), math.inf, dtype=torch.float64)
    first = torch.where(hit.any(-1), hit.double().argmax(-1).double(), never)
    median = float(first.median())
    if not math.isfinite(median):
        return int(hit.any(-1).sum()), None, None
    return int(hit.any(-1).sum()), median, float(samples[int(median)])


def curves_json(curves: tuple[Curve, ...], histograms: str) -> list[dict[str, Any]]:
    """Each curve as plain lists: method, regime, samples, per-seed rewards, and its histograms under the
    key ``histograms`` (the sequence bandit calls its token marginals ``marginals``)."""
    return [
        {
            "method": c.method,
            "regime": c.regime,
            "samples": c.samples.tolist(),
            "rewards": c.rewards.tolist(),
            histograms: c.histograms.tolist(),
        }
        for c in curves
    ]


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for the block (the studies' tiny ops only lose to threading), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def summarise(curves: tuple[Curve, ...], threshold: float) -> list[SummaryRow]:
    """One row per curve: final reward mean ± 95% CI over seeds; median steps and samples to ``threshold``."""
    rows = []
    for curve in curves:
        final, ci = mean_ci(curve.rewards[:, -1])
        reached, steps, samples = _median_first_reach(curve.rewards, curve.samples, threshold)
        rows.append(SummaryRow(curve.method, curve.regime, final, ci, reached, curve.rewards.shape[0], steps, samples))
    return rows


@dataclass(frozen=True)
class BanditResult:
    """Everything :func:`run_bandit` measured.

    Attributes:
        config: the study.
        bandit: the environment (π_ref ``[N]``, r ``[N]``, contexts ``[K, N]``).
        curves: one :class:`Curve` per method × regime, in config order (methods outer).
        seconds: wall time of the whole study.
        initial_reward: E_{a∼π_ref}[r(a)], the reward every run starts from.
    """

    config: BanditConfig
    bandit: Bandit
    curves: tuple[Curve, ...]
    seconds: float
    initial_reward: float = field(default=math.nan)

    def summary(self) -> list[SummaryRow]:
        """One row per curve: final reward mean ± 95% CI over seeds; median steps and samples to the threshold."""
        return summarise(self.curves, self.config.threshold)

    def to_json(self) -> dict[str, Any]:
        """Plain numbers (NaN as null): config, π_ref, r, summary, per-step curves and histograms."""
        return strict_json(
            {
                "study": "P3 didactic bandit (Tajwar et al. 2024)",
                "config": asdict(self.config),
                "snapshot_steps": list(self.config.snapshot_steps()),
                "reference": self.bandit.reference.tolist(),
                "reward_function": self.bandit.rewards.tolist(),
                "initial_reward": self.initial_reward,
                "seconds": self.seconds,
                "summary": [asdict(row) for row in self.summary()],
                "curves": curves_json(self.curves, "histograms"),
            }
        )


def run_bandit(config: BanditConfig) -> BanditResult:
    """Every method × regime of ``config``, once per seed (P3 §4.1, docs/methods.md §7). Runs on one thread."""
    start = time.perf_counter()
    with one_thread():
        bandit = make_bandit(config)
        curves = []
        for method in config.methods:
            objective = build(method)
            for regime in config.regimes:
                runs = [train(bandit, objective, regime, config, seed) for seed in range(config.seeds)]
                histograms = torch.stack([run.histograms for run in runs]).mean(0)
                rewards = torch.stack([run.rewards for run in runs])
                curves.append(Curve(method, regime, rewards, samples_drawn(config, regime), histograms))
    initial = float((bandit.reference @ bandit.rewards).item())
    return BanditResult(config, bandit, tuple(curves), time.perf_counter() - start, initial)
