"""The typed configuration of a training run, and its checks.

One dataclass per concern (model, data, LoRA, optimisation, evaluation, output); a run is a
list of stages that share these defaults and override a few fields each (P1's sequential
DPO+ExMATE: an ``exmate`` stage, then a ``dpo`` stage whose reference is the first stage's
result). :func:`check` refuses an impossible combination before anything is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from preftune.data.collate import LAYOUTS
from preftune.errors import SpecError
from preftune.objectives import build


@dataclass
class ModelConfig:
    """Which model to train: ``smollm2-135m-instruct`` (embedded), ``tiny-random``, a folder or a hub name."""

    name: str = "smollm2-135m-instruct"
    dtype: str = "float32"  # float32 | bfloat16 | auto (the weights' own)


@dataclass
class LoraSettings:
    """LoRA through peft; the reference is then the same model with adapters disabled."""

    enabled: bool = True
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str = "all-linear"
    last_layers: int | None = None  # adapt only the last N layers: the backward pass stops there


@dataclass
class DataConfig:
    """Where the pairs come from and how they are cut to length."""

    train: str = "bundled:hh-harmless"
    eval: str | None = None  # a separate file, or None to hold out `eval_size` pairs of `train`
    eval_size: int = 100
    train_size: int | None = None  # use only the first N training pairs (after the hold-out)
    format: str = "auto"
    pairing: str = "best_vs_worst"
    columns: dict[str, str] = field(default_factory=dict)
    skip_invalid: bool = False
    max_length: int = 512
    max_prompt_length: int | None = None  # None: half of max_length (prompts are cut from the left)
    layout: str = "shared"  # shared: packed, one prompt per pair | packed: one prompt per response | padded
    group_by_length: bool = False  # batches of similar lengths (less padding in the padded layout)


@dataclass
class OptimConfig:
    """The optimiser, its schedule, and the batch arithmetic."""

    lr: float = 5e-4
    weight_decay: float = 0.0
    batch_size: int = 8  # global: pairs per optimiser step, over all processes and accumulation
    grad_accumulation: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    warmup_ratio: float = 0.1
    schedule: str = "cosine"  # any transformers scheduler name: linear, cosine, constant_with_warmup...
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16
    seed: int = 0
    max_bad_steps: int = 3  # consecutive non-finite losses before the run stops


@dataclass
class EvalConfig:
    """Periodic evaluation on the held-out pairs (METHODS.md §6 statistics)."""

    every: int = 0  # steps; 0: only before and after training
    batch_size: int = 16
    samples: int = 0  # held-out prompts answered (greedy) before and after training, for the summary
    max_new_tokens: int = 64


@dataclass
class StageConfig:
    """One stage of a run. Fields left ``None`` take the run's defaults."""

    name: str = "train"
    objective: str = "dpo"
    reference: str = "auto"  # auto | adapter | copy | precomputed | previous (the last stage's result)
    lr: float | None = None
    epochs: float | None = None
    max_steps: int | None = None


@dataclass
class RunConfig:
    """Everything a training run needs; YAML files and ``key=value`` overrides fill it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    objective: str = "dpo + exmate"
    reference: str = "auto"
    stages: list[StageConfig] = field(default_factory=list)
    output_dir: str = "out/run"
    save_every: int = 50  # steps between checkpoints
    keep_checkpoints: int = 2
    merge_lora: bool = False  # also write merged full weights at the end
    logit_chunk: int = 1024  # response positions per LM-head chunk
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    resume: bool = False

    def resolved_stages(self) -> list[StageConfig]:
        """The stages to run: the configured ones, or one stage from the top-level objective."""
        if self.stages:
            return list(self.stages)
        return [StageConfig(name="train", objective=self.objective, reference=self.reference)]


REFERENCE_CHOICES = ("auto", "adapter", "copy", "precomputed", "previous")


def check(config: RunConfig) -> None:
    """Refuse impossible settings with one clear line, before any model or data is loaded."""
    o = config.optim
    positive = {"optim.lr": o.lr, "optim.batch_size": o.batch_size, "optim.grad_accumulation": o.grad_accumulation}
    for key, value in positive.items():
        if not value > 0:
            raise SpecError(f"{key} must be > 0, got {value}")
    if o.batch_size % o.grad_accumulation:
        raise SpecError(
            f"optim.batch_size {o.batch_size} is not a multiple of optim.grad_accumulation {o.grad_accumulation}"
        )
    if o.max_steps is None and not o.epochs > 0:
        raise SpecError(f"optim.epochs must be > 0, got {o.epochs}")
    if not 0 <= o.warmup_ratio < 1:
        raise SpecError(f"optim.warmup_ratio must be in [0, 1), got {o.warmup_ratio}")
    if o.mixed_precision not in ("auto", "no", "bf16", "fp16"):
        raise SpecError(f"optim.mixed_precision must be auto, no, bf16 or fp16, got {o.mixed_precision!r}")
    if config.data.max_length < 2:
        raise SpecError(f"data.max_length must be at least 2, got {config.data.max_length}")
    if config.data.layout not in LAYOUTS:
        raise SpecError(f"data.layout must be one of {', '.join(LAYOUTS)}, got {config.data.layout!r}")
    if config.data.pairing not in ("best_vs_worst", "all"):
        raise SpecError(f"data.pairing must be best_vs_worst or all, got {config.data.pairing!r}")
    if config.lora.enabled and config.lora.rank < 1:
        raise SpecError(f"lora.rank must be >= 1, got {config.lora.rank}")
    if config.save_every < 1:
        raise SpecError(f"save_every must be >= 1, got {config.save_every}")
    if config.keep_checkpoints < 1:
        raise SpecError(f"keep_checkpoints must be >= 1 (--resume needs one), got {config.keep_checkpoints}")
    for index, stage in enumerate(config.resolved_stages()):
        where = f"stage '{stage.name}'" if config.stages else "objective"
        objective = build(stage.objective)
        if objective.record_type.__name__ != "PairRecord":
            raise SpecError(f"{where}: '{stage.objective}' is an on-policy objective; offline training needs pairs")
        if stage.reference not in REFERENCE_CHOICES:
            raise SpecError(
                f"{where}: reference must be one of {', '.join(REFERENCE_CHOICES)}, got {stage.reference!r}"
            )
        if stage.reference == "previous" and index == 0:
            raise SpecError(f"{where}: reference 'previous' needs an earlier stage")
        if stage.reference == "adapter" and not config.lora.enabled:
            raise SpecError(f"{where}: reference 'adapter' needs LoRA (lora.enabled=true)")


def to_dict(config: RunConfig) -> dict[str, Any]:
    """A plain dict of the config (for the summary and the saved run record)."""
    from dataclasses import asdict

    return asdict(config)
