"""P3's sequence variant of the didactic bandit (Tajwar et al. 2024, §4.1; docs/methods.md §7): a tiny causal
transformer emits L tokens with a per-token reward, trained with preftune's own objectives.

Environment (fixed by ``env_seed``):

- V tokens (default 10); a response is exactly L tokens (default 3, no EOS). K contexts (default 8), each
  **[our choice]** one prompt token, ids V..V+K-1 (the embedding table has V+K rows).
- ρ, the per-token reference: the tanh(Cauchy(-0.7, 0.4)) histogram of :mod:`preftune.lab.bandit` in V
  bins instead of 100, with the same 1e-6 floor (its interior mode is token 1 for V = 10).
  **[our choice]** π_ref(y|x) = Π_t ρ(y_t): i.i.d. tokens, the same for every context.
- r_tok(v) = exp(-((v - centre)/width)²), width 1 token; centre ⌊0.7·V⌋ (``far``: token 7, ~2% of ρ's
  mass, as the bandit's a = 70) or ρ's interior mode (``near``: token 1; ρ's end bins hold the saturated
  Cauchy tails). The sequence reward r(y) = (1/L)·Σ_t r_tok(y_t) lies in [0, 1].

Policy: a pre-norm causal transformer (d_model 32, 2 layers, 2 heads, ReLU MLP of width 64, no dropout,
float32, written in plain torch with a leading model axis so that the seeds of a run train in one batch)
reads [prompt, y_1..y_{L-1}]; position t gives log π_θ(·|x, y_≤t) = log_softmax(log ρ + head(h_t)) with
``head`` initialised to exactly zero, so every policy starts *exactly* at π_ref. The body's random init
comes from the seed. Sampling is autoregressive, token by token, from the seed's :class:`torch.Generator`.

Training mirrors :func:`preftune.lab.bandit.train`: each step C responses per context, offline (a dataset
drawn once from π_ref, re-read in shuffled epochs) or on-policy (sampled afresh from π_θ). Records are real
multi-token ones: per-token log-probs ``[K, C, L]`` through :meth:`SequenceLogProbs.from_tokens`, the
reference's from log ρ; pairwise objectives read best vs worst of the C. Adam, lr 1e-3. The score is the
exact true reward E_{y∼π}[r(y)]: every V^L response of every context is enumerated (one batched pass over
the K·V^(L-1) inputs [x, y_1..y_{L-1}]), averaged over contexts.

**[our choice]** Cost: the exact evaluation is K·V^(L-1)·L transformer positions per model (2,400 at the
defaults, 32,000 at L = 4), so it runs every ``eval_every`` steps (default 10; always at 0 and the last
step) and L defaults to 3: with L = 4 one evaluation of three seeds takes ~0.3 s on one CPU thread and the
default study ~4 minutes instead of well under one.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from preftune.errors import SpecError
from preftune.files import strict_json
from preftune.lab.bandit import (
    CAUCHY_LOC,
    CAUCHY_SCALE,
    METHODS,
    REGIMES,
    Curve,
    SummaryRow,
    curves_json,
    one_thread,
    reference_histogram,
    summarise,
)
from preftune.lab.validate import choose, integers_at_least, number_in
from preftune.objectives import Objective, PairRecord, Record, SequenceLogProbs, build, record_for

PEAKS = ("far", "near")
FAR_FRACTION = 0.7  # the far centre is token ⌊0.7·V⌋, as the bandit's a = 70 of 100
# Integer settings of SequenceBanditConfig and their least values.
# fmt: off
_MINIMUMS = {"seeds": 1, "steps": 1, "samples_per_context": 2, "contexts": 1, "vocab": 3, "length": 1,
             "offline_groups": 1, "reference_draws": 1, "snapshots": 2, "eval_every": 1, "d_model": 2, "layers": 1,
             "heads": 1, "env_seed": 0}
# fmt: on


@dataclass(frozen=True)
class SequenceBanditConfig:
    """One sequence-bandit study: every method × regime, once per seed; checked on construction.

    Attributes:
        peak: ``"far"`` (r_tok centred on token ⌊0.7·V⌋, little reference mass) or ``"near"`` (ρ's mode).
        methods, regimes, seeds, steps, samples_per_context, lr, offline_groups, reference_draws, floor,
        threshold, snapshots, env_seed: as in :class:`preftune.lab.bandit.BanditConfig`.
        contexts: K, prompt tokens (one per context).
        vocab: V, response tokens.
        length: L, tokens per response.
        width: r_tok's width in tokens.
        d_model, layers, heads: the transformer's size (d_model divisible by heads).
    """

    peak: str = "far"
    methods: tuple[str, ...] = METHODS
    regimes: tuple[str, ...] = REGIMES
    seeds: int = 3
    steps: int = 200
    samples_per_context: int = 4
    contexts: int = 8
    vocab: int = 10
    length: int = 3
    width: float = 1.0
    lr: float = 1e-3
    offline_groups: int = 50
    reference_draws: int = 10_000
    floor: float = 1e-6
    threshold: float = 0.5
    snapshots: int = 4
    eval_every: int = 10
    d_model: int = 32
    layers: int = 2
    heads: int = 2
    env_seed: int = 0

    def __post_init__(self) -> None:
        study = "sequence-bandit"
        if self.peak not in PEAKS:
            raise SpecError(f"{study}: peak must be one of {', '.join(PEAKS)}, got {self.peak!r}")
        object.__setattr__(self, "methods", choose(study, "methods", self.methods, METHODS))
        object.__setattr__(self, "regimes", choose(study, "regimes", self.regimes, REGIMES))
        integers_at_least(study, self, _MINIMUMS)
        for name, high in (("lr", 10.0), ("floor", 1.0), ("threshold", 1.0), ("width", 1e6)):
            number_in(study, name, getattr(self, name), 0.0, high)
        if self.d_model % self.heads:
            raise SpecError(f"{study}: d_model {self.d_model} must be divisible by heads {self.heads}")
        if self.vocab**self.length * self.contexts > 2_000_000:
            raise SpecError(
                f"{study}: V^L·K = {self.vocab**self.length * self.contexts} responses is too many to enumerate"
            )

    def eval_steps(self) -> tuple[int, ...]:
        """The steps whose exact reward is recorded: every ``eval_every``-th, and always 0 and ``steps``."""
        return tuple(sorted({*range(0, self.steps, self.eval_every), self.steps}))

    def snapshot_steps(self) -> tuple[int, ...]:
        """The steps whose token marginal is kept: evenly spaced, first 0, last ``steps``."""
        n = min(self.snapshots, self.steps + 1)
        return tuple(sorted({round(i * self.steps / (n - 1)) for i in range(n)}))


@dataclass(frozen=True)
class SequenceBandit:
    """The environment.

    Attributes:
        reference: ``[V]`` ρ, the floored histogram (sums to 1).
        reference_logprobs: ``[V]`` log ρ as the policy computes it at step 0 (bit for bit).
        rewards: ``[V]`` r_tok(v).
        prompts: ``[K]`` the contexts' prompt tokens, V..V+K-1.
        sequences: ``[V^L, L]`` every response, in lexicographic order.
        sequence_rewards: ``[V^L]`` r(y), the mean of r_tok over its tokens.
    """

    reference: Tensor
    reference_logprobs: Tensor
    rewards: Tensor
    prompts: Tensor
    sequences: Tensor
    sequence_rewards: Tensor


def peak_centre(config: SequenceBanditConfig, reference: Tensor) -> int:
    """r_tok's centre: ⌊0.7·V⌋ (far) or ρ's mode among the interior tokens 1..V-2 (near; the end bins hold
    the Cauchy tails that tanh saturates)."""
    if config.peak == "far":
        return math.floor(FAR_FRACTION * config.vocab)
    return int(reference[1:-1].argmax()) + 1 if config.vocab > 2 else int(reference.argmax())


def make_sequence_bandit(config: SequenceBanditConfig) -> SequenceBandit:
    """The environment of ``config``: ρ (from ``env_seed``), r_tok, the prompts and every response."""
    v, n = config.vocab, config.length
    reference = reference_histogram(
        config.reference_draws, config.floor, torch.Generator().manual_seed(config.env_seed), v
    )
    tokens = torch.arange(v, dtype=torch.float64)
    rewards = torch.exp(-(((tokens - peak_centre(config, reference)) / config.width) ** 2))
    sequences = torch.tensor(list(itertools.product(range(v), repeat=n)), dtype=torch.long).view(-1, n)
    prompts = torch.arange(v, v + config.contexts)
    logprobs = torch.log_softmax(reference.log().float(), -1)
    return SequenceBandit(reference, logprobs, rewards, prompts, sequences, rewards[sequences].mean(-1))


def _init(generator: torch.Generator, name: str, shape: tuple[int, int]) -> Tensor:
    """Embeddings N(0, 1) as :class:`nn.Embedding`; weights U(±1/√fan_in) as :class:`nn.Linear`'s."""
    if name in ("embed", "position"):
        return torch.randn(*shape, generator=generator)
    return (torch.rand(*shape, generator=generator) * 2 - 1) / math.sqrt(shape[0])


class SequencePolicy(nn.Module):
    """M independent policies (one per seed), log π_θ(·|x, y_≤t) = log_softmax(log ρ + head(h_t)).

    h is a pre-norm causal transformer (embeddings of V+K tokens plus L positions; per layer: self-attention
    and a ReLU MLP of width 2·d_model, each with a residual; a final LayerNorm), written with a leading model
    axis so that the M seeds train in one batched pass (Adam is elementwise, so they stay independent).
    ``head`` is initialised to exactly zero: every policy starts at π_ref.
    """

    def __init__(self, reference: Tensor, config: SequenceBanditConfig, seeds: tuple[int, ...]) -> None:
        super().__init__()
        self.heads, d, v = config.heads, config.d_model, config.vocab
        shapes = {"embed": (v + config.contexts, d), "position": (config.length, d)}
        for i in range(config.layers):
            shapes |= {f"qkv{i}": (d, 3 * d), f"out{i}": (d, d), f"up{i}": (d, 2 * d), f"down{i}": (2 * d, d)}
        generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.weights = nn.ParameterDict(
            {n: nn.Parameter(torch.stack([_init(g, n, s) for g in generators])) for n, s in shapes.items()}
        )
        m = len(seeds)  # biases start at zero, LayerNorm gains at one
        self.biases = nn.ParameterDict({n: nn.Parameter(torch.zeros(m, 1, s[1])) for n, s in list(shapes.items())[2:]})
        self.norms = nn.ParameterDict(
            {f"norm{i}": nn.Parameter(torch.ones(m, 1, d)) for i in range(2 * config.layers + 1)}
        )
        self.head = nn.Parameter(torch.zeros(m, d, v))  # zero: log π_θ = log ρ exactly at step 0
        self.register_buffer("ref_logits", reference.log().float())
        self.layers, self.vocab_in = config.layers, v + config.contexts

    def _attend(self, x: Tensor, i: int, shape: tuple[int, int, int]) -> Tensor:
        m, b, t = shape
        d = x.shape[-1]
        qkv = torch.baddbmm(self.biases[f"qkv{i}"], x, self.weights[f"qkv{i}"])  # [M, B·T, 3d]
        q, k, v = qkv.view(m * b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        mixed = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # [M·B, heads, T, d/heads]
        return torch.baddbmm(
            self.biases[f"out{i}"], mixed.transpose(1, 2).reshape(m, b * t, d), self.weights[f"out{i}"]
        )

    def _norm(self, x: Tensor, i: int) -> Tensor:
        return nn.functional.layer_norm(x, x.shape[-1:]) * self.norms[f"norm{i}"]

    def forward(self, inputs: Tensor) -> Tensor:
        """``[M, B, T, V]`` next-token log-probs for inputs ``[M, B, T]`` = [prompt, y_1..y_{T-1}], T ≤ L."""
        m, b, t = inputs.shape
        offsets = torch.arange(m).view(m, 1, 1) * self.vocab_in
        embed = self.weights["embed"].view(-1, self.weights["embed"].shape[-1])
        x = (nn.functional.embedding(inputs + offsets, embed) + self.weights["position"][:, None, :t]).view(
            m, b * t, -1
        )
        for i in range(self.layers):
            x = x + self._attend(self._norm(x, 2 * i), i, (m, b, t))
            hidden = torch.relu(torch.baddbmm(self.biases[f"up{i}"], self._norm(x, 2 * i + 1), self.weights[f"up{i}"]))
            x = x + torch.baddbmm(self.biases[f"down{i}"], hidden, self.weights[f"down{i}"])
        shift = torch.bmm(self._norm(x, 2 * self.layers), self.head).view(m, b, t, -1)
        return torch.log_softmax(self.ref_logits + shift, dim=-1)

    def token_logprobs(self, prompts: Tensor, responses: Tensor) -> Tensor:
        """``[M, K, C, L]`` log π_θ(y_t|x, y_<t) of responses ``[M, K, C, L]`` after prompts ``[K]``."""
        m, k, c, n = responses.shape
        inputs = torch.cat([prompts.view(1, k, 1, 1).expand(m, k, c, 1), responses[..., :-1]], dim=-1)
        logprobs = self(inputs.view(m, k * c, n))  # [M, K·C, L, V]
        return logprobs.gather(-1, responses.reshape(m, k * c, n, 1)).view(m, k, c, n)

    @torch.no_grad()
    def sample(self, prompts: Tensor, count: int, length: int, generators: list[torch.Generator]) -> Tensor:
        """``[M, K, C, L]`` responses sampled token by token, C per prompt of ``prompts [K]``, model m
        drawing from ``generators[m]``."""
        m, k = len(generators), len(prompts)
        inputs = prompts.repeat_interleave(count).view(1, k * count, 1).expand(m, -1, -1)
        for _ in range(length):
            probs = self(inputs)[:, :, -1].exp()  # [M, K·C, V]
            drawn = torch.stack([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, generators, strict=True)])
            inputs = torch.cat([inputs, drawn], dim=-1)
        return inputs[..., 1:].reshape(m, k, count, length)


@torch.no_grad()
def sequence_logprobs(policy: SequencePolicy, bandit: SequenceBandit) -> Tensor:
    """``[M, K, V^L]`` log π_θ(y|x) of every response (order of ``bandit.sequences``), exactly: one pass over
    the K·V^(L-1) inputs [x, y_1..y_{L-1}] gives every conditional; a response sums its own L of them."""
    v, m = len(bandit.reference), policy.head.shape[0]
    k, n = len(bandit.prompts), bandit.sequences.shape[1]
    prefixes = bandit.sequences[::v, : n - 1]  # [P = V^(L-1), L-1], lexicographic
    p = len(prefixes)
    inputs = torch.cat([bandit.prompts.view(k, 1, 1).expand(k, p, 1), prefixes.expand(k, -1, -1)], -1)
    logprobs = policy(inputs.view(1, k * p, n).expand(m, -1, -1)).view(m, k, p, n, v)
    head = logprobs[..., :-1, :].gather(-1, prefixes.view(1, 1, p, n - 1, 1).expand(m, k, -1, -1, 1)).sum((-2, -1))
    return (head.unsqueeze(-1) + logprobs[..., -1, :]).view(m, k, -1)


def true_reward(logprobs: Tensor, bandit: SequenceBandit) -> Tensor:
    """``[M]`` E_{y∼π}[r(y)], exact: Σ_y π(y|x)·r(y) over all V^L responses, averaged over the K contexts."""
    return (logprobs.double().exp() @ bandit.sequence_rewards).mean(-1)


def token_marginal(logprobs: Tensor, bandit: SequenceBandit) -> Tensor:
    """``[M, V]`` how often π_θ emits each token, over positions and contexts (exact)."""
    counts = nn.functional.one_hot(bandit.sequences, len(bandit.reference)).double().mean(1)  # [V^L, V]
    return (logprobs.double().exp() @ counts).mean(-2)


def _record(tokens: Tensor) -> SequenceLogProbs:
    return SequenceLogProbs.from_tokens(tokens, torch.ones_like(tokens, dtype=torch.bool))


def make_record(objective: Objective, policy: Tensor, bandit: SequenceBandit, responses: Tensor) -> Record:
    """The record ``objective`` reads for ``responses [M, K, C, L]`` with per-token log-probs ``policy`` (same
    shape); the M models' contexts are stacked into M·K prompts (objectives treat prompts independently).

    Group objectives: the C responses with their rewards ``[M·K, C]``, tokens ``[M·K, C, L]``; pairwise ones:
    best vs worst reward of each context's C (first on ties). Reference records: log ρ of every token.
    """
    m, k, c, n = responses.shape
    responses, policy = responses.reshape(m * k, c, n), policy.reshape(m * k, c, n)
    r = bandit.sequence_rewards[_index(responses, len(bandit.reference))]  # [M·K, C]
    if objective.record_type is PairRecord:
        pick = torch.cat([r.argmax(-1, keepdim=True), r.argmin(-1, keepdim=True)], dim=-1)  # [M·K, 2]
        rows = pick.unsqueeze(-1).expand(-1, -1, n)
        responses, policy = responses.gather(1, rows), policy.gather(1, rows)
    return record_for(objective.record_type, _record(policy), _record(bandit.reference_logprobs[responses]), r)


def _index(responses: Tensor, vocab: int) -> Tensor:
    """``[*B]`` each response's row in the lexicographic ``sequences`` (its tokens read in base V)."""
    weights = vocab ** torch.arange(responses.shape[-1] - 1, -1, -1)
    return (responses * weights).sum(-1)


@dataclass(frozen=True)
class Run:
    """The runs of one method × regime, one per seed. ``rewards``: ``[S, E]`` exact true reward at
    :meth:`SequenceBanditConfig.eval_steps`; ``marginals``: ``[S, snapshots, V]`` token marginals at
    :meth:`SequenceBanditConfig.snapshot_steps`."""

    rewards: Tensor
    marginals: Tensor


def samples_drawn(config: SequenceBanditConfig, regime: str) -> Tensor:
    """``[E]`` responses drawn before each of :meth:`SequenceBanditConfig.eval_steps`: K·C per step
    on-policy; offline, the distinct dataset responses read so far."""
    steps = torch.tensor(config.eval_steps())
    if regime == "offline":
        steps = steps.clamp(max=config.offline_groups)
    return steps * config.contexts * config.samples_per_context


def _batch_loss(objective: Objective, record: Record, models: int) -> Tensor:
    """Σ over models of each model's mean loss over its K contexts: every model gets its own gradient."""
    return objective(record).loss.view(models, -1).mean(-1).sum()


def train(
    bandit: SequenceBandit, objective: Objective, regime: str, config: SequenceBanditConfig, seeds: tuple[int, ...]
) -> Run:
    """Train one policy per seed with ``objective`` for ``config.steps`` Adam steps, all seeds in one batch; a
    seed's init, data and samples come from its own generator. The exact reward every ``eval_every`` steps."""
    generators = [torch.Generator().manual_seed(seed) for seed in seeds]
    m, k, c, n, groups = len(seeds), config.contexts, config.samples_per_context, config.length, config.offline_groups
    policy = SequencePolicy(bandit.reference, config, seeds)
    optimiser = torch.optim.Adam(policy.parameters(), lr=config.lr)
    if regime == "offline":  # drawn once from π_ref = Π_t ρ(y_t): [M, K, G, C, L]
        draws = [torch.multinomial(bandit.reference, k * groups * c * n, True, generator=g) for g in generators]
        dataset = torch.stack(draws).view(m, k, groups, c, n)
    evals, snapshots = set(config.eval_steps()), set(config.snapshot_steps())
    rewards, marginals, order = [], [], torch.empty(0, dtype=torch.long)
    for step in range(config.steps + 1):
        if step in evals or step in snapshots:
            exact = sequence_logprobs(policy, bandit)  # [M, K, V^L]
            if step in evals:
                rewards.append(true_reward(exact, bandit))
            if step in snapshots:
                marginals.append(token_marginal(exact, bandit))
        if step == config.steps:
            break
        if regime == "offline":
            if step % groups == 0:  # a new epoch: reshuffle the groups (the same order for every seed)
                order = torch.randperm(groups, generator=generators[0])
            responses = dataset[:, :, int(order[step % groups])]
        else:
            responses = policy.sample(bandit.prompts, c, n, generators)  # [M, K, C, L]
        record = make_record(objective, policy.token_logprobs(bandit.prompts, responses), bandit, responses)
        optimiser.zero_grad()
        _batch_loss(objective, record, m).backward()
        optimiser.step()
    return Run(torch.stack(rewards, 1), torch.stack(marginals, 1))


@dataclass(frozen=True)
class SequenceBanditResult:
    """Everything :func:`run_sequence_bandit` measured.

    Attributes:
        config: the study.
        bandit: the environment (ρ ``[V]``, r_tok ``[V]``, every response and its reward).
        curves: one :class:`~preftune.lab.bandit.Curve` per method × regime, in config order (methods
            outer); its ``histograms`` are token marginals ``[snapshots, V]`` (mean over seeds).
        seconds: wall time of the whole study.
        initial_reward: E_{y∼π_ref}[r(y)] = Σ_v ρ(v)·r_tok(v), the reward every run starts from.
    """

    config: SequenceBanditConfig
    bandit: SequenceBandit
    curves: tuple[Curve, ...]
    seconds: float
    initial_reward: float = field(default=math.nan)

    def summary(self) -> list[SummaryRow]:
        """One row per curve: final reward mean ± 95% CI over seeds; median steps and samples to the threshold
        (the first evaluated step at or above it: a multiple of ``eval_every``)."""
        steps = self.config.eval_steps()
        rows = summarise(self.curves, self.config.threshold)
        return [
            r
            if r.steps_to_threshold is None
            else replace(r, steps_to_threshold=float(steps[int(r.steps_to_threshold)]))
            for r in rows
        ]

    def to_json(self) -> dict[str, Any]:
        """Plain numbers (NaN as null): config, ρ, r_tok, summary, per-step curves and token marginals."""
        return strict_json(
            {
                "study": "P3 didactic bandit, sequence variant (Tajwar et al. 2024)",
                "config": asdict(self.config),
                "reference_distribution": f"tanh(Cauchy({CAUCHY_LOC}, {CAUCHY_SCALE})) in {self.config.vocab} bins",
                "eval_steps": list(self.config.eval_steps()),
                "snapshot_steps": list(self.config.snapshot_steps()),
                "reference": self.bandit.reference.tolist(),
                "token_reward": self.bandit.rewards.tolist(),
                "initial_reward": self.initial_reward,
                "seconds": self.seconds,
                "summary": [asdict(row) for row in self.summary()],
                "curves": curves_json(self.curves, "marginals"),
            }
        )


def run_sequence_bandit(config: SequenceBanditConfig) -> SequenceBanditResult:
    """Every method × regime of ``config``, once per seed. Runs on one thread."""
    start = time.perf_counter()
    with one_thread():
        bandit = make_sequence_bandit(config)
        curves = []
        for method in config.methods:
            objective = build(method)
            for regime in config.regimes:
                run = train(bandit, objective, regime, config, tuple(range(config.seeds)))
                curves.append(Curve(method, regime, run.rewards, samples_drawn(config, regime), run.marginals.mean(0)))
    initial = float(bandit.reference @ bandit.rewards)
    return SequenceBanditResult(config, bandit, tuple(curves), time.perf_counter() - start, initial)
