"""P3's unified fine-tuning loop (Algorithm 1, docs/methods.md §4) over the one :class:`Trainer`.

Each round takes B/C prompts (``prompts_per_round``), samples C responses to each from the
*current* policy, labels them (a reward model, a judge with iterative pairwise ranking, a reward
function: :mod:`preftune.judging.labellers`), and makes T passes (``passes``) of minibatches of M
items (``batch_size``) with the run's objective:

- a **group** objective (``reinforce``, ``rwr``, ``bon``, ``bon_neg``) trains on each prompt's C
  samples and their rewards;
- a **pairwise** objective (``dpo``, ``ipo``, ``bcr``, ``dpo + exmate``, ...) trains on pairs formed
  from the rewards: best vs worst, or every pair more than ``reward_gap`` apart (``pairing``);
  a ``mix`` fraction of each round's items are offline pairs instead (``mix=0.5``: half).

The rounds are a batch source, :class:`OnPolicySource`: an on-policy run is one ``fit`` over it,
and the trainer never knows where its batches came from (offline training is a ``fit`` over a
dataset). Each round's buffer is a :class:`~preftune.training.sources.BufferSource`.

    >>> source = OnPolicySource(trainer, tokenizer, prompts, prompt_ids, make_labeller("length"),
    ...                         OnlineSettings(rounds=4, prompts_per_round=8, samples_per_prompt=4),
    ...                         SamplingConfig(temperature=1.0, max_new_tokens=64), Batcher(pad_id))
    >>> result, rounds = train_rounds(source)  # trainer.fit(source, hooks=[..., RoundLog()])
    >>> for stats in rounds:
    ...     print(stats)
"""

from __future__ import annotations

import bisect
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from preftune.data import Batch
from preftune.data.batcher import Batcher
from preftune.data.examples import Origin
from preftune.data.groups import TokenizedGroup
from preftune.errors import PreftuneError
from preftune.generation.sampling import Sample, SamplingConfig, sample
from preftune.objectives import GroupRecord
from preftune.training.hooks import Checkpoints, Fit, Hook, TrainResult
from preftune.training.loop import Trainer, responses_read
from preftune.training.sources import BufferSource

PAIRINGS = ("best_vs_worst", "all")

# ``sampler(model, tokenizer, prompt_ids, config) -> [Sample] * (len(prompt_ids) * config.n)``, prompt-major:
# :func:`~preftune.generation.sampling.sample`'s contract (the HF sampler is the default)
Sampler = Callable[[Any, Any, Sequence[list[int]], SamplingConfig], list[Sample]]


@dataclass(frozen=True)
class OnlineSettings:
    """The four knobs of P3's Algorithm 1 and what pairs and mixes them.

    Attributes:
        rounds: sampling rounds.
        prompts_per_round: B/C, the prompts sampled each round.
        samples_per_prompt: C, responses sampled per prompt (≥ 2: rewards compare them).
        passes: T, passes over each round's items (T > 1 reuses samples).
        batch_size: M, items (pairs or groups) per optimiser step.
        pairing: for pairwise objectives: ``best_vs_worst`` (one pair per prompt) or ``all``
            (every pair of responses whose rewards differ by more than ``reward_gap``).
        reward_gap: the least reward difference that makes a pair.
        mix: the fraction of a round's items that are offline pairs (pairwise objectives only).
        missing_eos_penalty: subtracted from the reward of a response cut by the length limit
            (TRL's ``missing_eos_penalty``); None leaves rewards as the labeller gave them.
        seed: the prompts' order, the sampling and the buffers' order.
    """

    rounds: int
    prompts_per_round: int
    samples_per_prompt: int = 4
    passes: int = 1
    batch_size: int = 8
    pairing: str = "best_vs_worst"
    reward_gap: float = 0.0
    mix: float = 0.0
    missing_eos_penalty: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("rounds", "prompts_per_round", "passes", "batch_size"):
            if getattr(self, name) < 1:
                raise PreftuneError(f"online.{name} must be at least 1, not {getattr(self, name)}")
        if self.samples_per_prompt < 2:
            raise PreftuneError(
                f"samples_per_prompt (C; a run's sampling.n) must be at least 2, not {self.samples_per_prompt}"
            )
        if self.pairing not in PAIRINGS:
            raise PreftuneError(f"online.pairing must be one of {', '.join(PAIRINGS)}, not {self.pairing!r}")
        if not 0 <= self.mix < 1:
            raise PreftuneError(f"online.mix is a fraction in [0, 1), not {self.mix}")
        if self.reward_gap < 0 or (self.missing_eos_penalty is not None and self.missing_eos_penalty < 0):
            raise PreftuneError("online.reward_gap and online.missing_eos_penalty must be >= 0")

    @classmethod
    def read_from(cls, source: Any, **given: Any) -> OnlineSettings:
        """The settings named alike on ``source`` (a run's ``online`` config section), ``given`` added
        or overriding (the batch size and seed live elsewhere in a run's config)."""
        names = {f.name for f in fields(cls)} - set(given)
        return cls(**{name: getattr(source, name) for name in names if hasattr(source, name)}, **given)

    def items_per_round(self, group_objective: bool) -> int:
        """The most items a round can hold (what sizes the run's schedule)."""
        c = self.samples_per_prompt
        per_prompt = 1 if group_objective or self.pairing == "best_vs_worst" else c * (c - 1) // 2
        online = self.prompts_per_round * per_prompt
        return online + offline_count(online, self.mix)

    def steps_per_round(self, group_objective: bool) -> int:
        return self.passes * math.ceil(self.items_per_round(group_objective) / self.batch_size)


def offline_count(online_items: int, mix: float) -> int:
    """Offline items beside ``online_items`` so that they are a ``mix`` fraction of the round."""
    return round(online_items * mix / (1 - mix)) if mix > 0 else 0


@dataclass(frozen=True)
class RoundStats:
    """What one round did (logged per round; the time split is generation / labelling / training).

    ``labelling``: what the labeller reported about the round's labelling
    (:meth:`~preftune.judging.labellers.Labeller.diagnostics`: for a judge, the fraction of its
    comparisons decided and Kendall's τ between its rankings and the responses' lengths), logged
    beside the other numbers under the labeller's own names; empty for a labeller that reports none.
    """

    round: int
    prompts: int
    samples: int
    reward_mean: float
    reward_std: float
    mean_length: float
    finished: float
    items: int
    offline_items: int
    steps: int
    loss: float
    generate_s: float
    label_s: float
    train_s: float
    kl: float = math.nan  # mean log π(y|x) − log π_ref(y|x) over the round's samples, before training on them
    labelling: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        """Every number, flat: the fields and the labeller's diagnostics (``rounds.jsonl``, the trackers)."""
        numbers = {k: float(v) for k, v in self.__dict__.items() if k != "labelling"}
        return {**numbers, **{k: float(v) for k, v in self.labelling.items() if k not in numbers}}

    @classmethod
    def from_dict(cls, values: dict[str, float]) -> RoundStats:
        """The inverse of :meth:`to_dict` (a line of ``rounds.jsonl``); names that are not fields: the labelling."""
        names = {f.name for f in fields(cls)} - {"labelling"}
        kept = {k: int(v) if k == "round" else v for k, v in values.items() if k in names}
        return cls(**kept, labelling={k: float(v) for k, v in values.items() if k not in names})

    def __str__(self) -> str:
        labelled = "".join(f", {k.replace('_', ' ')} {v:.2f}" for k, v in self.labelling.items())
        return (
            f"round {self.round}: reward {self.reward_mean:+.3f} ± {self.reward_std:.3f}{labelled}, length "
            f"{self.mean_length:.1f} tokens, finished {self.finished:.2f}, {self.items} items "
            f"({self.offline_items} offline), KL {self.kl:.4f}, {self.steps} steps, loss {self.loss:.4f}; "
            f"time generate "
            f"{self.generate_s:.1f} s / label {self.label_s:.1f} s / train {self.train_s:.1f} s"
        )


def labeller_diagnostics(labeller: Any) -> dict[str, float]:
    """What ``labeller`` reports about its last labelling (``diagnostics()``); {} for one that has none
    (any object with ``rewards`` labels a round)."""
    report = getattr(labeller, "diagnostics", None)
    return {str(k): float(v) for k, v in report().items()} if callable(report) else {}


def sampling_shard(num_prompts: int, c: int, batch_size: int, world: int, rank: int) -> tuple[int, int, int]:
    """``(start, stop, first_batch)``: the prompts ``[start, stop)`` of a round that process ``rank`` of
    ``world`` samples, and the number of its first sampling batch in the whole round (its seed offset).

    A sampling batch holds ``batch_size`` rows, C per prompt. Where C divides it, the batches hold
    whole prompts, and each process takes a contiguous block of batches: seeded by their numbers in
    the round, they give the samples one process draws. Otherwise each takes a contiguous block of
    prompts, seeded by its first row (valid samples, not one process's)."""
    if world == 1:
        return 0, num_prompts, 0
    if batch_size % c == 0:
        per_batch = batch_size // c
        batches = -(-num_prompts // per_batch)
        lo, hi = rank * batches // world, (rank + 1) * batches // world
        return min(lo * per_batch, num_prompts), min(hi * per_batch, num_prompts), lo
    lo, hi = rank * num_prompts // world, (rank + 1) * num_prompts // world
    return lo, hi, lo * c


def _mean_diagnostics(reports: list[dict[str, float]]) -> dict[str, float]:
    """The processes' labeller diagnostics, each value averaged over the processes that labelled."""
    keys = {k for report in reports for k in report}
    return {k: sum(r[k] for r in reports if k in r) / sum(1 for r in reports if k in r) for k in sorted(keys)}


def round_prompts(num_prompts: int, per_round: int, round_index: int, seed: int) -> list[int]:
    """The prompt indices of round ``round_index``: consecutive slices of seeded epoch-wise shuffles."""
    out: list[int] = []
    start = round_index * per_round
    while len(out) < per_round:
        epoch, offset = divmod(start + len(out), num_prompts)
        order = list(range(num_prompts))
        random.Random(seed * 1_000_003 + epoch).shuffle(order)
        out.extend(order[offset : offset + per_round - len(out)])
    return out


def labelled_groups(
    samples: Sequence[Sample], prompt_ids: Sequence[list[int]], rewards: Sequence[Sequence[float]], round_index: int
) -> list[TokenizedGroup]:
    """One group per prompt (responses in sampling order), NaN-rewarded responses dropped; groups
    left with fewer than two responses are dropped (nothing to compare)."""
    by_prompt: dict[int, list[Sample]] = {}
    for s in samples:
        by_prompt.setdefault(s.prompt_index, []).append(s)
    groups = []
    for i, ids in enumerate(prompt_ids):
        kept = [(s, r) for s, r in zip(by_prompt.get(i, []), rewards[i], strict=True) if not math.isnan(r)]
        if len(kept) < 2:
            continue
        groups.append(
            TokenizedGroup(
                list(ids),
                tuple(list(s.response_ids) for s, _ in kept),
                tuple(float(r) for _, r in kept),
                Origin(f"round {round_index}", i + 1),
                finished=tuple(bool(s.finished) for s, _ in kept),
            )
        )
    return groups


def shown_samples(
    round_index: int,
    prompts: Sequence[Any],
    samples: Sequence[Sample],
    rewards: Sequence[Sequence[float]],
    c: int,
    count: int = 2,
) -> list[dict[str, Any]]:
    """The best- and worst-rewarded response to the round's first ``count`` prompts (the run's report)."""
    from preftune.judging.labellers import prompt_text

    out = []
    for j, prompt in enumerate(prompts[:count]):
        ranked = sorted(
            (r, x.text) for r, x in zip(rewards[j], samples[j * c : (j + 1) * c], strict=True) if not math.isnan(r)
        )
        if ranked:
            out.append(
                {
                    "round": round_index,
                    "prompt": prompt_text(prompt),
                    "best": ranked[-1][1],
                    "best_reward": ranked[-1][0],
                    "worst": ranked[0][1],
                    "worst_reward": ranked[0][0],
                }
            )
    return out


def pairs_from_groups(groups: Sequence[TokenizedGroup], pairing: str, reward_gap: float) -> list[TokenizedGroup]:
    """(chosen, rejected) groups of two from each group's rewards: best vs worst (first of equals),
    or every pair more than ``reward_gap`` apart; a group whose rewards are all equal gives none."""
    out = []
    for g in groups:
        rewards = g.rewards or ()
        order = sorted(range(len(rewards)), key=lambda k: -rewards[k])
        candidates = (
            [(order[0], order[-1])]
            if pairing == "best_vs_worst"
            else [(a, b) for i, a in enumerate(order) for b in order[i + 1 :]]
        )
        for a, b in candidates:
            if rewards[a] - rewards[b] > reward_gap:
                finished = None if g.finished is None else (g.finished[a], g.finished[b])
                responses = (g.responses[a], g.responses[b])
                out.append(TokenizedGroup(g.prompt_ids, responses, (rewards[a], rewards[b]), g.origin, finished))
    return out


def first_pass_kl(steps: Sequence[dict[str, float]]) -> float:
    """Mean log π(y|x) − log π_ref(y|x) over the sampled responses that ``steps`` (a round's first
    pass) trained on, each step's policy before its own update: P3's Monte Carlo estimate of
    KL(π ‖ π_ref) per response, from the log-probs the steps computed anyway; NaN without any."""
    responses = sum(h.get("sampled/responses", 0.0) for h in steps)
    total = sum(h.get("sampled/log_ratio_sum", 0.0) for h in steps)
    return total / responses if responses > 0 else math.nan


def offline_items(pairs: Sequence[TokenizedGroup], k: int, rng: random.Random) -> list[TokenizedGroup]:
    """``k`` offline pairs drawn without replacement (with, past the dataset's size), labelled (1, 0):
    chosen over rejected, as the round's own pairs carry their rewards."""
    if k == 0:
        return []
    if not pairs:
        raise PreftuneError("online.mix > 0 needs offline pairs (data.train)")
    picks = rng.sample(range(len(pairs)), k) if k <= len(pairs) else [rng.randrange(len(pairs)) for _ in range(k)]
    return [replace(pairs[i], rewards=(1.0, 0.0)) for i in picks]


class OnPolicySource:
    """P3's Algorithm 1 as a batch source (see the module docstring): ``next()`` serves the current
    round's buffer, and when it runs out samples, labels and pairs the next round, so the trainer's one
    ``fit`` runs every round without knowing where its batches come from (nanochat's ``get_batch``).

    Its state (``state_dict``, saved in every checkpoint) is the next round's index, the current
    round's buffer with its samples and position, and every round's statistics so far: a run resumed
    mid-round finishes that round on the same samples, and its round statistics are the
    uninterrupted run's. :class:`RoundLog` reports each round when its training is over.

    Args:
        trainer: built with ``total_steps = settings.rounds * settings.steps_per_round(...)``
            (:meth:`total_steps`); the source samples from ``trainer.model`` and reads its
            processes, accumulation and objective.
        tokenizer: the policy's (sampling, decoding).
        prompts: as the labeller reads them (text or messages), one per prompt.
        prompt_ids: ``[P_i]`` token ids of each prompt (chat template and generation prompt).
        labeller: ``rewards(prompts, responses) -> [[float] * C] * P`` (:mod:`preftune.judging.labellers`).
        settings: the loop's knobs.
        sampling: how to sample (``n`` is set to ``samples_per_prompt``; the seed per round).
        batcher: builds batches from the round's items.
        offline: pairs to mix in (``settings.mix``).
        reference: the reference policy (``records(batch) -> [B, C]``, a live one: the adapters
            switched off, a frozen copy). Each round's items are scored with it once, in the first
            pass's own micro-batches, and the trainer reads that table in every pass
            (:meth:`round_reference`); the steps report the sampled responses' log-ratio to it, whose
            mean over the round's first pass is the round's KL. None: the trainer's own reference
            per step, and no KL.
        sampler: draws each round's responses, called as ``sampler(trainer.model, tokenizer,
            prompt_ids, config)`` with :func:`~preftune.generation.sampling.sample`'s contract
            (:data:`Sampler`); None is that HF sampler. A seam, so that a faster engine can sample
            (:class:`~preftune.generation.vllm_backend.ColocatedVllmSampler` loads the current
            weights into vLLM first) while the source stays the same.
    """

    kind = "on_policy"

    def __init__(
        self,
        trainer: Trainer,
        tokenizer: Any,
        prompts: Sequence[Any],
        prompt_ids: Sequence[list[int]],
        labeller: Any,
        settings: OnlineSettings,
        sampling: SamplingConfig,
        batcher: Batcher,
        offline: Sequence[TokenizedGroup] = (),
        reference: Any = None,
        sampler: Sampler | None = None,
    ) -> None:
        if len(prompts) != len(prompt_ids) or not prompts:
            raise PreftuneError(f"{len(prompts)} prompts but {len(prompt_ids)} tokenised prompts")
        self.group_objective = trainer.objective.record_type is GroupRecord
        if self.group_objective and settings.mix > 0:
            raise PreftuneError("online.mix blends offline *pairs* in: it needs a pairwise objective")
        self.trainer, self.tokenizer, self.labeller = trainer, tokenizer, labeller
        self.prompts, self.prompt_ids, self.settings = list(prompts), [list(p) for p in prompt_ids], settings
        self.sampling = replace(sampling, n=settings.samples_per_prompt)
        self.batcher, self.offline, self.reference = batcher, list(offline), reference
        trainer.log_sampled_ratio = reference is not None
        self.sampler: Sampler = sampler if sampler is not None else sample
        self.next_round = 0
        self.buffer: BufferSource | None = None  # the current round's; None before the first or for an empty one
        self.rounds: list[RoundStats] = []  # every round sampled: sampling statistics, its steps planned
        self.start_steps: list[int] = []  # the global step each round's training starts after
        self.shown: list[dict[str, Any]] = []  # the best and worst samples of a few prompts per round

    @staticmethod
    def total_steps(settings: OnlineSettings, objective: Any) -> int:
        """The run's optimiser steps at most: every round full."""
        return settings.rounds * settings.steps_per_round(objective.record_type is GroupRecord)

    def __iter__(self) -> OnPolicySource:
        return self

    def __next__(self) -> list[Batch]:
        while self.buffer is None or self.buffer.step >= self.buffer.total_steps:
            if self.next_round >= self.settings.rounds:
                raise StopIteration
            self.sample_round(self.next_round)
            self.next_round += 1
        return next(self.buffer)

    def sample_round(self, round_index: int) -> RoundStats:
        """Sample, label and pair round ``round_index``: its buffer becomes the one served; its statistics."""
        s = self.settings
        chosen = round_prompts(len(self.prompts), s.prompts_per_round, round_index, s.seed)
        with self.trainer.whole_parameters():  # sharded: each process samples its share with the whole policy
            samples, rewards, labelling, (t0, t1, t2) = self.sample_and_label(chosen, round_index)
        groups = labelled_groups(samples, [self.prompt_ids[i] for i in chosen], rewards, round_index)
        self.shown += shown_samples(
            round_index, [self.prompts[i] for i in chosen], samples, rewards, s.samples_per_prompt
        )
        items = self.round_items(groups)
        extra = offline_items(self.offline, offline_count(len(items), s.mix), random.Random(s.seed * 31 + round_index))
        self.buffer = self.round_buffer(items + extra, round_index)
        with self.trainer.whole_parameters():  # a reference with the adapters off: each its own share
            self.round_reference()
        flat = [r for row in rewards for r in row if not math.isnan(r)]
        mean = sum(flat) / max(len(flat), 1)
        std = math.sqrt(sum((r - mean) ** 2 for r in flat) / max(len(flat) - 1, 1))
        stats = RoundStats(
            round_index,
            len(chosen),
            len(samples),
            mean,
            std,
            sum(len(x.response_ids) for x in samples) / max(len(samples), 1),
            sum(bool(x.finished) for x in samples) / max(len(samples), 1),
            len(items),
            len(extra),
            self.buffer.total_steps if self.buffer else 0,
            math.nan,
            t1 - t0,
            t2 - t1,
            0.0,
            math.nan,  # the KL: from the first pass's steps (finished_rounds)
            labelling,
        )
        self.rounds.append(stats)
        self.start_steps.append(self.trainer.global_step)
        return stats

    def finished_rounds(
        self, history: Sequence[dict[str, float]], final: bool = False, start: int = 0
    ) -> list[RoundStats]:
        """The rounds from ``start`` on whose training is over (``final``: every round sampled, the fit
        having ended), with their steps, mean loss and training time read from ``history`` (the fit's
        per-step statistics, in step order: each round's steps are found by bisection, so reporting
        stays cheap in a long run)."""
        steps_done = [h["step"] for h in history]
        done = []
        for stats, first in zip(self.rounds[start:], self.start_steps[start:], strict=True):
            if not final and self.trainer.global_step < first + stats.steps:
                break
            lo, hi = bisect.bisect_right(steps_done, first), bisect.bisect_right(steps_done, first + stats.steps)
            steps = history[lo:hi]
            losses = [h["loss"] for h in steps if "loss" in h]
            loss = sum(losses) / len(losses) if losses else math.nan
            kl = first_pass_kl(steps[: max(1, int(stats.steps) // self.settings.passes)])
            train_s = sum(h.get("step_s", 0.0) for h in steps)
            done.append(replace(stats, steps=len(steps), loss=loss, train_s=train_s, kl=kl))
        return done

    def round_ends_now(self) -> bool:
        """Whether the trainer's last step was the last of the current round's."""
        return bool(self.rounds) and self.trainer.global_step == self.start_steps[-1] + self.rounds[-1].steps

    def sample_and_label(
        self, chosen: list[int], round_index: int
    ) -> tuple[list[Sample], list[list[float]], dict[str, float], tuple[float, float, float]]:
        """The round's samples (prompt-major) and rewards per prompt, with the labeller's diagnostics
        and the times sampling began, ended and labelling ended.

        Each process samples and labels its share of the round's prompts (:func:`sampling_shard`: a
        contiguous block of the sampler's batches, each seeded by its number in the whole round, so
        the samples are the ones one process would draw) and the shares are gathered: every process
        then holds the whole round, as the buffer's plan needs."""

        s, accelerator = self.settings, self.trainer.accelerator
        world, rank = accelerator.num_processes, accelerator.process_index
        start, stop, first_batch = sampling_shard(
            len(chosen), s.samples_per_prompt, self.sampling.batch_size, world, rank
        )
        mine = chosen[start:stop]
        t0 = time.perf_counter()
        # batch b of round r draws after seed (S·1,000,003 + r)·65,537 + b: no two (round, batch) pairs share one
        # while a round has under 65,537 sampler batches (S·1,000,003 + r + b gave round r's batch b + 1 the seed
        # of round r + 1's batch b, and so the same uniform draws)
        config = replace(self.sampling, seed=(s.seed * 1_000_003 + round_index) * 65_537 + first_batch)
        drawn = (
            self.sampler(self.trainer.model, self.tokenizer, [self.prompt_ids[i] for i in mine], config) if mine else []
        )
        samples = [replace(x, prompt_index=x.prompt_index + start) for x in drawn]
        t1 = time.perf_counter()
        rewards = self._rewards(mine, drawn) if mine else []
        labelling = labeller_diagnostics(self.labeller) if mine else {}
        t2 = time.perf_counter()
        if world > 1:
            from accelerate.utils import gather_object

            shares = gather_object([(samples, rewards, labelling)])
            samples = [x for share in shares for x in share[0]]
            rewards = [row for share in shares for row in share[1]]
            labelling = _mean_diagnostics([share[2] for share in shares if share[2]])
        return samples, rewards, labelling, (t0, t1, t2)

    def round_items(self, groups: list[TokenizedGroup]) -> list[TokenizedGroup]:
        """What the round trains on: its groups (a group objective; pairs within each for a
        :class:`~preftune.objectives.WithinGroups` one, so only groups holding a pair), or pairs."""
        s = self.settings
        if not self.group_objective:
            return pairs_from_groups(groups, s.pairing, s.reward_gap)
        gap = getattr(self.trainer.objective, "gap", None)  # WithinGroups: every pair of a group, read in place
        return groups if gap is None else [g for g in groups if pairs_from_groups([g], "all", gap)]

    def round_reference(self) -> None:
        """Score every item of the round's buffer with the reference once and hand the trainer that
        table for the round: the steps of every pass read it, with no reference forward of their own.

        Each process scores the micro-batches it trains on in the first pass (so under bf16 autocast
        the reference is rounded in the policy's own batch layout), items only a later pass reads in
        blocks of a micro-batch shared out over the processes; the tables are gathered."""
        if self.reference is None or self.buffer is None:
            return
        if self.trainer.objective.needs_reference_tokens:  # per-token values: the live reference, per step
            self.trainer.reference = self.reference
            return
        import torch
        from accelerate.utils import gather_object

        from preftune.modeling.reference import PrecomputedReference, compute_table

        trainer, buffer = self.trainer, self.buffer
        accelerator = trainer.accelerator
        mine = buffer.plan.first_reads(buffer.total_steps, accelerator.process_index)
        with torch.no_grad(), accelerator.autocast():
            batches = [buffer.batch(torch.tensor(block)) for block in mine]
            table = compute_table(self.reference, batches) if batches else None
        parts = [t for t in gather_object([table]) if t is not None]
        trainer.reference = PrecomputedReference({name: torch.cat([t[name] for t in parts]) for name in parts[0]})

    def _rewards(self, chosen: list[int], samples: Sequence[Sample]) -> list[list[float]]:
        """The labeller's rewards per prompt (sampling order), less the missing-EOS penalty."""
        from preftune.judging.labellers import apply_missing_eos_penalty

        c = self.settings.samples_per_prompt
        texts = [[x.text for x in samples[j * c : (j + 1) * c]] for j in range(len(chosen))]
        finished = [[bool(x.finished) for x in samples[j * c : (j + 1) * c]] for j in range(len(chosen))]
        rewards = self.labeller.rewards([self.prompts[i] for i in chosen], texts)
        return apply_missing_eos_penalty(
            [list(map(float, row)) for row in rewards], finished, self.settings.missing_eos_penalty
        )

    def round_batch_size(self, items: int) -> int:
        """M, or for a round with fewer than M items (ties leave prompts without a pair) the most of them
        that the processes and accumulation steps divide evenly; 0 when not even that: no step."""
        trainer = self.trainer
        if items >= self.settings.batch_size:
            return self.settings.batch_size
        unit = trainer.accelerator.num_processes * trainer.optim.grad_accumulation
        return items // unit * unit

    def round_buffer(self, items: list[TokenizedGroup], round_index: int) -> BufferSource | None:
        """The round's buffer: T passes of M-item minibatches over ``items``, shared over the processes;
        None when the round has too few items for a step."""
        s, trainer = self.settings, self.trainer
        accelerator = trainer.accelerator
        batch_size = self.round_batch_size(len(items))
        if not batch_size:
            return None
        return BufferSource(
            items,
            self.batcher,
            batch_size=batch_size,
            passes=s.passes,
            seed=s.seed,
            round=round_index,
            world_size=accelerator.num_processes,
            rank=accelerator.process_index,
            grad_accumulation=trainer.optim.grad_accumulation,
            group_size=responses_read(trainer.objective),
            device=accelerator.device,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "next_round": self.next_round,
            "buffer": None if self.buffer is None else self.buffer.state_dict(),
            "rounds": [r.to_dict() for r in self.rounds],
            "start_steps": list(self.start_steps),
            "shown": list(self.shown),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != self.kind:
            raise PreftuneError(
                f"the checkpoint's data position is of a {state.get('kind')} source, not an "
                "on-policy one (written by an older preftune?)"
            )
        self.next_round, self.buffer = int(state["next_round"]), None
        if state["buffer"] is not None:  # a resumed process cannot sample the round again: its saved samples
            round_index, items = BufferSource.saved_samples(state["buffer"])
            self.buffer = self.round_buffer(items, round_index)
            assert self.buffer is not None  # a saved buffer had steps
            self.buffer.load_state_dict(state["buffer"])
            self.round_reference()  # the reference is frozen: the same table as before the stop
        self.rounds = [RoundStats.from_dict(r) for r in state["rounds"]]
        self.start_steps, self.shown = [int(s) for s in state["start_steps"]], list(state["shown"])


class RoundLog(Hook):
    """Reports each round of an :class:`OnPolicySource` once its training is over: to the console,
    the trackers (``online/*``) and ``on_round(stats, rounds, shown)`` (every finished round so far
    and the round's shown samples, for files); ``self.rounds`` holds them. Its state is how many
    rounds it has reported."""

    name = "rounds"

    def __init__(
        self,
        on_round: Callable[[RoundStats, list[RoundStats], list[dict[str, Any]]], None] | None = None,
        console: Any = None,
    ) -> None:
        self.on_round, self.console = on_round, console
        self.rounds: list[RoundStats] = []
        self.reported = 0

    def state_dict(self) -> dict[str, Any]:
        return {"reported": self.reported}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.reported = int(state["reported"])

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        # a round without steps (too few items) is reported with the next round that has some
        if fit.source.round_ends_now():  # type: ignore[attr-defined]
            self._report(fit, final=False)

    def end(self, fit: Fit) -> None:
        self._report(fit, final=True)

    def _report(self, fit: Fit, final: bool) -> None:
        source = fit.source
        if len(self.rounds) < self.reported:  # resumed: the rounds reported before, again for the files
            self.rounds = source.finished_rounds(fit.result.history, True)[: self.reported]  # type: ignore[attr-defined]
        new = source.finished_rounds(fit.result.history, final, start=self.reported)  # type: ignore[attr-defined]
        accelerator = fit.trainer.accelerator
        for stats in new:
            self.rounds.append(stats)
            if self.console is not None and accelerator.is_main_process:
                self.console.print(str(stats), highlight=False)
            accelerator.log({f"online/{k}": v for k, v in stats.to_dict().items()}, step=fit.trainer.global_step)
            if self.on_round is not None:
                shown = [row for row in source.shown if row["round"] == stats.round]  # type: ignore[attr-defined]
                self.on_round(stats, list(self.rounds), shown)
        self.reported = len(self.rounds)


class RoundCheckpoints(Hook):
    """A checkpoint at the end of every round of an :class:`OnPolicySource`, whatever ``save_every``
    says: an interrupted on-policy run loses at most the round it was in. Runs before
    :class:`~preftune.training.hooks.Checkpoints`, which then skips a step already saved."""

    def __init__(self, checkpoints: Checkpoints) -> None:
        self.checkpoints = checkpoints

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        if fit.source.round_ends_now():  # type: ignore[attr-defined]
            self.checkpoints.save(fit)


def train_rounds(
    source: OnPolicySource, hooks: Sequence[Hook] = (), steps: int | None = None
) -> tuple[TrainResult, list[RoundStats]]:
    """One ``fit`` over ``source`` (every round, or ``steps`` steps): the result and each round's statistics."""
    log = RoundLog()
    result = source.trainer.fit(source, steps=steps, hooks=[*hooks, log])
    return result, log.rounds
