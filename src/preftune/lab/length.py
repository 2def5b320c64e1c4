"""P3's synthetic length tasks with a small language model (Tajwar et al. 2024; docs/methods.md §7).

A preference over response *length* stands in for human preferences, so that what each method
does to the policy can be read off one number. Three tasks:

- ``min``: the shorter response is preferred; the on-policy reward is −length.
- ``mode``: the response closer to the dataset's mode length is preferred; reward −|length − mode|.
- ``skew``: shorter is preferred (reward −length), but the offline dataset is truncated to its
  longer responses, so offline data never shows a short one.

docs/methods.md §7 expects on-policy DPO to drive the length to its target fastest on ``min`` and
``skew``, and the methods to be alike on ``mode`` (whose target the starting policy already covers).

**The starting model [our choice].** ``tiny-random`` (2 layers, width 64) samples near-uniformly
from 49,152 tokens, so it essentially never emits its end-of-turn token: every response would be
cut at ``max_new_tokens`` and there would be no length to prefer. SmolLM2-135M has lengths, but its
answers to ordinary prompts run far past a small token budget, and sampling and training it on two
CPU cores would take many minutes per method. So the tiny model is first *pre-trained briefly*
(full fine-tuning with ``mle`` through the same :class:`~preftune.training.loop.Trainer`: 100
steps of 8, under a minute on two CPU cores, done once and kept in preftune's model cache like the
tiny model itself) to recite the alphabet, ``"a b c d"``, one letter per token, stopping after k letters
with k drawn from a discretised normal (mean ``warmup_mean``, sd ``warmup_sd``, clipped to
[1, 16]). That warm model is the starting policy and the reference of every method: its length
distribution is spread around the mode, with short responses rare, and "when to stop" is one
decision per letter, which a LoRA on two layers can shift within tens of steps.

**Prompts [our choice].** Synthetic ("Request 10000: recite the alphabet."), ``prompts`` for training
and ``eval_prompts`` held out (other numbers, as are the warm-up's). All have one token length: the
warm model learns where to stop partly by absolute position, and prompts of other lengths shift it.

**Length [our choice].** Tokens of the response without its closing end-of-turn token (a response
cut by ``max_new_tokens`` counts ``max_new_tokens``). The labeller sees text only, so it
re-tokenises the decoded response; on the alphabet the two counts agree.

**The dataset [our choice].** ``dataset_samples`` responses to each training prompt sampled from
the warm model (seeded); the mode is the most common length among all of them (the smaller on
ties). For ``skew``, only responses at least as long as the ``skew_quantile`` quantile of those
lengths (the median by default) are kept. Within each prompt, up to ``pairs_per_prompt`` pairs of
responses are drawn (seeded) among those the task's rule orders strictly (equal lengths, or equal
distances to the mode, make no pair), the preferred one chosen.

**Methods** (docs/methods.md §4, P3's Algorithm 1), each from the warm model with a fresh LoRA and the
objective's preftune defaults, ``steps`` optimiser steps of ``batch_size`` items:

- ``offline_dpo``: ``dpo`` on the dataset's pairs (:class:`~preftune.training.sources.DatasetSource`).
- ``pref_ft``: ``mle`` on the dataset's chosen responses (P3's "Pref-FT"), offline likewise.
- ``onpolicy_dpo``: ``dpo`` through :class:`~preftune.training.OnPolicySource`: each round
  ``batch_size`` prompts × C samples from the current policy, best vs worst by the task's reward.
- ``rwr``, ``reinforce``: the same loop, the C samples per prompt as a group with their rewards.

On-policy rounds take one step each (a round holds at most ``batch_size`` items). For ``skew``
the on-policy methods see exactly what they see for ``min``: the task differs in its offline data.

**Measurement.** At ``checkpoints`` evenly spaced steps (0 and ``steps`` included), the policy
samples ``eval_samples`` responses to each held-out prompt with one fixed sampling seed (the same
for every method and checkpoint): the mean length, the mean distance to the mode and the share
that finished by themselves.
"""

from __future__ import annotations

import copy
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from preftune.data import Batcher, Origin, TokenizedPair
from preftune.errors import SpecError
from preftune.generation.prompts import encode_prompt
from preftune.generation.sampling import Sample, SamplingConfig, sample
from preftune.lab.validate import choose, integers_at_least, number_in
from preftune.modeling import TINY_NAME, AdapterDisabledReference, apply_lora, load_model, load_tokenizer
from preftune.modeling.cache import atomic_directory, models_dir
from preftune.objectives import build
from preftune.training import (
    DatasetSource,
    Fit,
    Hook,
    OnlineSettings,
    OnPolicySource,
    OptimConfig,
    Trainer,
    make_accelerator,
    make_plan,
    responses_read,
    train_rounds,
)

TASKS = ("min", "mode", "skew")
METHODS = ("offline_dpo", "onpolicy_dpo", "rwr", "reinforce", "pref_ft")
ON_POLICY = ("onpolicy_dpo", "rwr", "reinforce")
OBJECTIVES = {"offline_dpo": "dpo", "onpolicy_dpo": "dpo", "rwr": "rwr", "reinforce": "reinforce", "pref_ft": "mle"}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
WARMUP_MAX_LETTERS = 16
WARMUP_BATCH = 8
WARMUP_VERSION = 2  # bump when the warm-up recipe changes, so cached warm models are not reused
# Integer settings of LengthConfig and their least values.
_MINIMUMS = {
    "steps": 1,
    "prompts": 1,
    "eval_prompts": 1,
    "samples_per_prompt": 2,
    "eval_samples": 1,
    "batch_size": 1,
    "max_new_tokens": WARMUP_MAX_LETTERS + 1,
    "dataset_samples": 2,
    "pairs_per_prompt": 1,
    "checkpoints": 2,
    "lora_rank": 1,
    "warmup_steps": 1,
    "warmup_examples": WARMUP_BATCH,
    "warmup_seed": 0,
    "seed": 0,
}


@dataclass(frozen=True)
class LengthConfig:
    """One length study: every method from the same warm model; checked on construction.

    Attributes:
        task: ``"min"``, ``"mode"`` or ``"skew"`` (see the module docstring).
        methods: names from :data:`METHODS`.
        model: the model to warm up; only ``tiny-random`` (see the module docstring).
        steps: optimiser steps per method.
        prompts: training prompts (the dataset's and the on-policy rounds').
        eval_prompts: held-out prompts the lengths are measured on.
        samples_per_prompt: C, on-policy samples per prompt per round.
        eval_samples: samples per held-out prompt at each checkpoint.
        batch_size: M, items (pairs or groups of C) per step; also the prompts of an on-policy round.
        max_new_tokens: the response budget (above the warm-up's longest response, 16 tokens).
        lr: Adam's learning rate on the LoRA (every method).
        lora_rank: the LoRA's rank (all linear layers of both decoder layers).
        dataset_samples: responses sampled per training prompt for the offline dataset.
        pairs_per_prompt: the most pairs drawn per training prompt.
        skew_quantile: ``skew`` keeps responses at least as long as this quantile of the lengths.
        checkpoints: measurements, evenly spaced from step 0 to ``steps``.
        warmup_steps, warmup_lr, warmup_examples: the warm-up's steps, learning rate and examples.
        warmup_mean, warmup_sd: the warm-up's length distribution (letters, before clipping to [1, 16]).
        warmup_seed: the warm-up's lengths and training (one warm model serves every ``seed``).
        seed: the dataset, the LoRA initialisation, the rounds and the measurement; studies that differ
            only in ``seed`` are independent replicates from the same warm model.
    """

    task: str = "min"
    methods: tuple[str, ...] = METHODS
    model: str = TINY_NAME
    steps: int = 20
    prompts: int = 16
    eval_prompts: int = 8
    samples_per_prompt: int = 4
    eval_samples: int = 4
    batch_size: int = 4
    max_new_tokens: int = 24
    lr: float = 3e-3
    lora_rank: int = 8
    dataset_samples: int = 8
    pairs_per_prompt: int = 4
    skew_quantile: float = 0.5
    checkpoints: int = 5
    warmup_steps: int = 100
    warmup_lr: float = 1e-2
    warmup_examples: int = 128
    warmup_mean: float = 7.0
    warmup_sd: float = 2.5
    warmup_seed: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise SpecError(f"length: task must be one of {', '.join(TASKS)}, got {self.task!r}")
        object.__setattr__(self, "methods", choose("length", "methods", self.methods, METHODS))
        if self.model != TINY_NAME:
            raise SpecError(f"length: only the {TINY_NAME} model is supported (warmed up first), got {self.model!r}")
        integers_at_least("length", self, _MINIMUMS)
        number_in("length", "lr", self.lr, 0.0, 1.0)
        number_in("length", "warmup_lr", self.warmup_lr, 0.0, 1.0)
        number_in("length", "skew_quantile", self.skew_quantile, 0.0, 1.0)
        number_in("length", "warmup_mean", self.warmup_mean, 0.0, float(WARMUP_MAX_LETTERS + 1))
        number_in("length", "warmup_sd", self.warmup_sd, 0.0, 100.0)

    def checkpoint_steps(self) -> tuple[int, ...]:
        """The measured steps: evenly spaced, first 0, last ``steps``."""
        n = min(self.checkpoints, self.steps + 1)
        return tuple(sorted({round(i * self.steps / (n - 1)) for i in range(n)}))


# --- the preference -------------------------------------------------------------------------------


def length_key(task: str, length: int, mode: int) -> int:
    """What the task minimises: the length (``min``, ``skew``) or its distance to the mode (``mode``)."""
    return abs(length - mode) if task == "mode" else length


def preference(task: str, a: int, b: int, mode: int) -> int:
    """+1 if a response of length ``a`` is preferred to one of length ``b``, −1 if ``b`` is, 0 on a tie."""
    ka, kb = length_key(task, a, mode), length_key(task, b, mode)
    return (ka < kb) - (ka > kb)


def reward(task: str, length: int, mode: int) -> float:
    """The on-policy reward with the same preference: −length, or −|length − mode|."""
    return -float(length_key(task, length, mode))


def dataset_mode(lengths: Sequence[Sequence[int]]) -> int:
    """The most common length over all prompts' responses (the smallest of equally common ones)."""
    counts = Counter(n for row in lengths for n in row)
    if not counts:
        raise SpecError("length: the dataset has no responses")
    top = max(counts.values())
    return min(n for n, c in counts.items() if c == top)


def skew_floor(lengths: Sequence[Sequence[int]], quantile: float) -> int:
    """The least length ``skew`` keeps: the ``quantile`` quantile (lower) of all lengths."""
    flat = sorted(n for row in lengths for n in row)
    return flat[min(int(quantile * len(flat)), len(flat) - 1)]


def preference_pairs(
    task: str, lengths: Sequence[Sequence[int]], mode: int, floor: int | None, per_prompt: int, seed: int
) -> list[tuple[int, int, int]]:
    """``(prompt, chosen, rejected)`` response indices: up to ``per_prompt`` strictly ordered pairs per
    prompt, drawn with ``seed``; responses shorter than ``floor`` are dropped first (``skew``)."""
    rng = random.Random(seed)
    out = []
    for p, row in enumerate(lengths):
        kept = [k for k, n in enumerate(row) if floor is None or n >= floor]
        ordered = []
        for i, a in enumerate(kept):
            for b in kept[i + 1 :]:
                side = preference(task, row[a], row[b], mode)
                if side:
                    ordered.append((p, a, b) if side > 0 else (p, b, a))
        rng.shuffle(ordered)
        out.extend(sorted(ordered[:per_prompt]))
    return out


def response_length(s: Sample) -> int:
    """Tokens of a sampled response, its closing end-of-turn token not counted."""
    return len(s.response_ids) - int(bool(s.finished))


class LengthLabeller:
    """The task's reward for each response (P3's length tasks), its length re-tokenised from the text."""

    def __init__(self, tokenizer: Any, task: str, mode: int) -> None:
        self.tokenizer, self.task, self.mode = tokenizer, task, mode

    def identity(self) -> str:
        return f"lab-length:{self.task}" + (f":mode={self.mode}" if self.task == "mode" else "")

    def count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def rewards(self, prompts: Sequence[Any], responses: Sequence[Sequence[str]]) -> list[list[float]]:
        return [[reward(self.task, self.count(text), self.mode) for text in row] for row in responses]


# --- the warm model -------------------------------------------------------------------------------


def alphabet(k: int) -> str:
    """The first ``k`` letters, space-separated: ``alphabet(3) == "a b c"``."""
    return " ".join(LETTERS[:k])


def warmup_lengths(config: LengthConfig) -> list[int]:
    """``warmup_examples`` lengths from the discretised normal, clipped to [1, 16] (seeded)."""
    rng = random.Random(config.warmup_seed)
    draw = (round(rng.gauss(config.warmup_mean, config.warmup_sd)) for _ in range(config.warmup_examples))
    return [min(max(k, 1), WARMUP_MAX_LETTERS) for k in draw]


def synthetic_prompts(start: int, count: int) -> list[str]:
    """``count`` prompts numbered from ``start``, all of one token length (five digits, one token each in
    SmolLM2's tokenizer): the warm model learns where to stop by position, so prompt lengths must match."""
    return [f"Request {i:05d}: recite the alphabet." for i in range(start, start + count)]


def response_ids(tokenizer: Any, text: str) -> list[int]:
    """A response's ids as training reads them: the text's tokens and the closing end-of-turn token."""
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], int(tokenizer.eos_token_id)]


def _accelerator() -> Any:
    """A CPU accelerator without mixed precision (accelerate's process-wide state dropped first)."""
    return make_accelerator("no", cpu=True)


def _optim(lr: float, batch_size: int, seed: int) -> OptimConfig:
    return OptimConfig(
        lr=lr, batch_size=batch_size, warmup_ratio=0.0, schedule="constant", mixed_precision="no", seed=seed
    )


def _warm_up(config: LengthConfig, tokenizer: Any, accelerator: Any) -> Any:
    """The tiny model after ``warmup_steps`` of full fine-tuning with ``mle`` on alphabet recitals."""
    prompts = synthetic_prompts(50_000, config.warmup_examples)
    pairs = []
    for i, (prompt, k) in enumerate(zip(prompts, warmup_lengths(config), strict=True)):
        ids = response_ids(tokenizer, alphabet(k))
        pairs.append(TokenizedPair(encode_prompt(tokenizer, prompt), ids, ids, Origin("warm-up", i + 1)))
    model = load_model(config.model, dtype="float32")
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    optim = _optim(config.warmup_lr, min(WARMUP_BATCH, config.warmup_examples), config.warmup_seed)
    trainer = Trainer(
        accelerator=accelerator, model=model, objective=build("mle"), optim=optim, total_steps=config.warmup_steps
    )
    plan = make_plan(pairs, optim, processes=1, group_by_length=False)
    trainer.fit(DatasetSource(pairs, Batcher(tokenizer.pad_token_id), plan, config.warmup_steps, group_size=1))
    return model


def warm_model_path(config: LengthConfig, tokenizer: Any, accelerator: Any) -> Path:
    """The folder of the warm model for ``config``'s warm-up settings, trained and saved on first use
    (in preftune's model cache, published atomically) **[our choice: cached like the tiny model]**."""
    recipe = f"{config.warmup_steps}x{WARMUP_BATCH}-lr{config.warmup_lr:g}-n{config.warmup_examples}"
    lengths = f"k{config.warmup_mean:g}~{config.warmup_sd:g}"
    key = f"{config.model}-alphabet-v{WARMUP_VERSION}-seed{config.warmup_seed}-{recipe}-{lengths}"
    dest = models_dir() / key
    if not (dest / "config.json").is_file():
        model = _warm_up(config, tokenizer, accelerator)
        with atomic_directory(dest) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    return dest


# --- measuring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measure:
    """One checkpoint: mean length (tokens), mean |length − mode|, share finished, over the held-out samples."""

    step: int
    length: float
    distance: float
    finished: float


def measure(
    model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], config: LengthConfig, mode: int, step: int
) -> Measure:
    """Sample the held-out prompts with the fixed measurement seed and summarise the lengths."""
    sampling = SamplingConfig(
        n=config.eval_samples,
        temperature=1.0,
        max_new_tokens=config.max_new_tokens,
        batch_size=64,
        seed=config.seed * 1_000_003 + 7,
    )
    samples = sample(model, tokenizer, prompt_ids, sampling)
    lengths = [response_length(s) for s in samples]
    n = len(lengths)
    return Measure(
        step, sum(lengths) / n, sum(abs(x - mode) for x in lengths) / n, sum(bool(s.finished) for s in samples) / n
    )


class MeasureAt(Hook):
    """Calls ``measure_now(step)`` after each step in ``steps`` (the trainer's global step)."""

    def __init__(self, steps: Sequence[int], measure_now: Callable[[int], None]) -> None:
        self.steps, self.measure_now = set(steps), measure_now

    def after_step(self, fit: Fit, stats: dict[str, float]) -> None:
        if fit.trainer.global_step in self.steps:
            self.measure_now(fit.trainer.global_step)


# --- the dataset ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthDataset:
    """The offline data: the warm model's samples, the mode, the pairs.

    Attributes:
        lengths: ``[prompts][dataset_samples]`` token lengths of the sampled responses.
        mode: the most common of those lengths (the ``mode`` task's target).
        floor: the least length kept (``skew``), None for the other tasks.
        pairs: the tokenised pairs, chosen first.
        chosen_lengths, rejected_lengths: the pairs' lengths, in order.
    """

    lengths: list[list[int]]
    mode: int
    floor: int | None
    pairs: list[TokenizedPair]
    chosen_lengths: list[int]
    rejected_lengths: list[int]

    def summary(self) -> dict[str, Any]:
        flat = [n for row in self.lengths for n in row]
        pairs = max(len(self.pairs), 1)
        return {
            "samples": len(flat),
            "mean_length": sum(flat) / len(flat),
            "mode": self.mode,
            "floor": self.floor,
            "histogram": dict(sorted(Counter(flat).items())),
            "pairs": len(self.pairs),
            "chosen_mean_length": sum(self.chosen_lengths) / pairs,
            "rejected_mean_length": sum(self.rejected_lengths) / pairs,
        }


def make_dataset(model: Any, tokenizer: Any, prompt_ids: Sequence[list[int]], config: LengthConfig) -> LengthDataset:
    """Sample ``dataset_samples`` responses per training prompt from the warm model and pair them by the task."""
    sampling = SamplingConfig(
        n=config.dataset_samples,
        temperature=1.0,
        max_new_tokens=config.max_new_tokens,
        batch_size=64,
        seed=config.seed * 1_000_003 + 1,
    )
    samples = sample(model, tokenizer, prompt_ids, sampling)
    c = config.dataset_samples
    rows = [samples[p * c : (p + 1) * c] for p in range(len(prompt_ids))]
    lengths = [[response_length(s) for s in row] for row in rows]
    mode = dataset_mode(lengths)
    floor = skew_floor(lengths, config.skew_quantile) if config.task == "skew" else None
    picks = preference_pairs(config.task, lengths, mode, floor, config.pairs_per_prompt, config.seed)
    pairs = [
        TokenizedPair(
            list(prompt_ids[p]),
            list(rows[p][a].response_ids),
            list(rows[p][b].response_ids),
            Origin(f"length-{config.task}", p + 1, f"{a} over {b}"),
        )
        for p, a, b in picks
    ]
    if len(pairs) < config.batch_size:
        raise SpecError(
            f"length: the {config.task} dataset has {len(pairs)} pairs, fewer than a batch of {config.batch_size}; "
            "raise prompts, dataset_samples or pairs_per_prompt"
        )
    return LengthDataset(
        lengths, mode, floor, pairs, [lengths[p][a] for p, a, _ in picks], [lengths[p][b] for p, _, b in picks]
    )


# --- training -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One method's measurements at the checkpoints, and its training time."""

    method: str
    measures: tuple[Measure, ...]
    seconds: float

    @property
    def steps(self) -> list[int]:
        return [m.step for m in self.measures]

    def values(self, task: str) -> list[float]:
        """What the task drives down: the mean length, or (``mode``) the mean distance to the mode."""
        return [m.distance if task == "mode" else m.length for m in self.measures]


@dataclass
class _Setup:
    """What every method shares: the tokenizer, the warm model, the prompts, the data and the accelerator."""

    config: LengthConfig
    tokenizer: Any
    warm: Any
    accelerator: Any
    prompts: list[str]
    prompt_ids: list[list[int]]
    eval_ids: list[list[int]]
    dataset: LengthDataset


def _trainer(setup: _Setup, method: str) -> Trainer:
    """A fresh LoRA on a copy of the warm model, with the method's objective (the warm model as reference)."""
    config = setup.config
    torch.manual_seed(config.seed)
    model = apply_lora(copy.deepcopy(setup.warm), rank=config.lora_rank)
    objective = build(OBJECTIVES[method])
    return Trainer(
        accelerator=setup.accelerator,
        model=model,
        objective=objective,
        optim=_optim(config.lr, config.batch_size, config.seed),
        total_steps=config.steps,
        reference=AdapterDisabledReference(model) if objective.needs_reference else None,
    )


def _train_offline(setup: _Setup, trainer: Trainer, hook: Hook) -> None:
    """``steps`` steps over the dataset's pairs (seeded epochs)."""
    pairs, optim = setup.dataset.pairs, trainer.optim
    plan = make_plan(pairs, optim, processes=1, group_by_length=False)
    source = DatasetSource(
        pairs,
        Batcher(setup.tokenizer.pad_token_id),
        plan,
        setup.config.steps,
        group_size=responses_read(trainer.objective),
    )
    trainer.fit(source, hooks=[hook])


def _train_on_policy(setup: _Setup, trainer: Trainer, hook: Hook) -> None:
    """Rounds of P3's loop, one step each, until ``steps`` steps (a round without items takes none;
    at most 3·steps rounds)."""
    config = setup.config
    settings = OnlineSettings(
        rounds=3 * config.steps,
        prompts_per_round=min(config.batch_size, config.prompts),
        samples_per_prompt=config.samples_per_prompt,
        batch_size=config.batch_size,
        seed=config.seed,
    )
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=config.max_new_tokens, batch_size=64)
    labeller = LengthLabeller(setup.tokenizer, config.task, setup.dataset.mode)
    source = OnPolicySource(
        trainer,
        setup.tokenizer,
        setup.prompts,
        setup.prompt_ids,
        labeller,
        settings,
        sampling,
        Batcher(setup.tokenizer.pad_token_id),
    )
    train_rounds(source, hooks=[hook], steps=config.steps)


def train_method(setup: _Setup, method: str) -> Curve:
    """Train ``method`` from the warm model; its measurements at the checkpoint steps."""
    start = time.perf_counter()
    trainer = _trainer(setup, method)
    measures: list[Measure] = []

    def measure_now(step: int) -> None:
        measures.append(measure(trainer.model, setup.tokenizer, setup.eval_ids, setup.config, setup.dataset.mode, step))

    checkpoints = setup.config.checkpoint_steps()
    measure_now(0)
    hook = MeasureAt([s for s in checkpoints if s > 0], measure_now)
    if method in ON_POLICY:
        _train_on_policy(setup, trainer, hook)
    else:
        _train_offline(setup, trainer, hook)
    if measures[-1].step != trainer.global_step:  # stopped short of the last checkpoint
        measure_now(trainer.global_step)
    return Curve(method, tuple(measures), time.perf_counter() - start)


# --- the study ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LengthResult:
    """Everything :func:`run_length_study` measured.

    Attributes:
        config: the study.
        dataset: the offline data (lengths, mode, pairs).
        curves: one per method, in config order.
        warmup_seconds, seconds: the warm-up's and the whole study's wall time.
    """

    config: LengthConfig
    dataset: LengthDataset
    curves: tuple[Curve, ...]
    warmup_seconds: float
    seconds: float

    @property
    def target(self) -> str:
        return "distance to the mode" if self.config.task == "mode" else "length"

    def summary(self) -> list[dict[str, Any]]:
        """Per method: the measured value (length, or distance to the mode) at the start and the end."""
        task = self.config.task
        return [
            {
                "method": c.method,
                "start": c.values(task)[0],
                "end": c.values(task)[-1],
                "end_length": c.measures[-1].length,
                "end_finished": c.measures[-1].finished,
                "seconds": c.seconds,
            }
            for c in self.curves
        ]

    def to_dict(self) -> dict[str, Any]:
        """Config, dataset summary, per-method summary and every checkpoint, as plain numbers."""
        return {
            "study": "P3 synthetic length tasks (Tajwar et al. 2024)",
            "config": asdict(self.config),
            "target": self.target,
            "dataset": self.dataset.summary(),
            "warmup_seconds": self.warmup_seconds,
            "seconds": self.seconds,
            "summary": self.summary(),
            "curves": [
                {"method": c.method, "seconds": c.seconds, "measures": [asdict(m) for m in c.measures]}
                for c in self.curves
            ],
        }


def _setup(config: LengthConfig) -> tuple[_Setup, float]:
    """The warm model, the prompts and the offline dataset; and the warm-up's seconds."""
    tokenizer = load_tokenizer(config.model)
    accelerator = _accelerator()
    start = time.perf_counter()
    warm = load_model(warm_model_path(config, tokenizer, accelerator), dtype="float32")
    warmup_seconds = time.perf_counter() - start
    prompts = synthetic_prompts(10_000, config.prompts)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    eval_ids = [encode_prompt(tokenizer, p) for p in synthetic_prompts(20_000, config.eval_prompts)]
    dataset = make_dataset(warm, tokenizer, prompt_ids, config)
    return _Setup(config, tokenizer, warm, accelerator, prompts, prompt_ids, eval_ids, dataset), warmup_seconds


def run_length_study(config: LengthConfig) -> LengthResult:
    """Warm the model up, build the task's dataset, and train and measure every method (P3's length tasks)."""
    start = time.perf_counter()
    setup, warmup_seconds = _setup(config)
    curves = tuple(train_method(setup, method) for method in config.methods)
    return LengthResult(config, setup.dataset, curves, warmup_seconds, time.perf_counter() - start)
