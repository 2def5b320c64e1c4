"""The typed configuration of a training run, and its checks.

One dataclass per concern (model, data, LoRA, optimisation, evaluation, output); a run is a
list of stages that share these defaults and override a few fields each (P1's sequential
DPO+ExMATE: an ``exmate`` stage, then a ``dpo`` stage whose reference is the first stage's
result). :func:`preftune.run.checks.check` refuses an impossible combination before
anything is loaded.

Defaults are TRL's ``DPOConfig``'s where TRL has one: the objective is plain ``dpo`` (β = 0.1), a
linear schedule without warmup, ``data.max_length`` 1024, and the learning rate, unless set, TRL's
1e-6 for full fine-tuning; with LoRA 5e-4 (adapters start at zero and need a larger step; the rate
our LoRA recipes use). docs/from-trl.md lists every difference and its reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from preftune.data.config import DataConfig
from preftune.errors import PreftuneError
from preftune.training.settings import EvalConfig, OptimConfig, RefreshConfig


@dataclass
class ModelConfig:
    """Which model to train: ``smollm2-135m-instruct`` (embedded), ``tiny-random``, a folder or a hub name."""

    name: str = "smollm2-135m-instruct"
    dtype: str = "float32"  # float32 | bfloat16 | float16 | auto (the weights' own)
    gradient_checkpointing: bool = False  # recompute activations in the backward: less memory, ~30% slower
    chat_template: str | None = None  # for a base model without one: a .jinja file or a built-in name (chatml)


@dataclass
class LoraSettings:
    """LoRA through peft; the reference is then the same model with adapters disabled."""

    enabled: bool = True
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: Any = "all-linear"  # "all-linear", a module name, "q_proj,v_proj", or a list of names
    last_layers: int | None = None  # adapt only the last N layers: the backward pass stops there


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
class OnlineConfig:
    """P3's unified loop (docs/methods.md §4): ``rounds`` > 0 trains on-policy; 0 trains offline on data.train.

    Each round samples ``sampling.n`` (C) responses to ``prompts_per_round`` (B/C) prompts of
    data.train from the current policy (how: :class:`SamplingSettings`), labels them with ``labeller``,
    and makes ``passes`` (T) passes of ``optim.batch_size`` (M) pairs or groups. See
    :mod:`preftune.training.online`.
    """

    rounds: int = 0
    labeller: str = "length"  # length | neg_length | length_target:N | function:MOD:FN | rm:PATH | judge:SPEC
    prompts_per_round: int = 8
    passes: int = 1
    pairing: str = "best_vs_worst"  # best_vs_worst | all (every pair more than reward_gap apart)
    reward_gap: float = 0.0
    mix: float = 0.0  # the fraction of each round's items that are offline pairs of data.train
    missing_eos_penalty: float | None = None  # subtracted from the reward of a response cut by the limit


@dataclass
class SamplingSettings:
    """How an on-policy run (``online.rounds`` > 0) samples each round, spelt as ``preftune generate`` spells it."""

    n: int = 4  # C: responses sampled per prompt (at least 2: their rewards are compared)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 64
    backend: str = "auto"  # auto (vLLM when installed, on a CUDA GPU, one process) | hf | vllm: who samples
    dtype: str = "auto"  # hf sampling: auto (a bf16 copy where bf16 is native) | float32 (the policy) | bfloat16
    vllm_gpu_memory: float = 0.3  # the GPU share the colocated vLLM engine takes beside the trainer


# The sampling settings' names before the ``sampling`` section (old dotted key -> new): a config
# may still spell them so, with a note, until preftune RENAMED_UNTIL (preftune.cli.config.load_config)
RENAMED_KEYS = {
    "online.samples_per_prompt": "sampling.n",
    "online.temperature": "sampling.temperature",
    "online.top_p": "sampling.top_p",
    "online.top_k": "sampling.top_k",
    "online.max_new_tokens": "sampling.max_new_tokens",
    "online.backend": "sampling.backend",
    "online.sample_dtype": "sampling.dtype",
    "online.vllm_gpu_memory": "sampling.vllm_gpu_memory",
}
RENAMED_UNTIL = "0.3"


def both_spellings_error(old: str, old_value: Any, new_value: Any, where: str) -> PreftuneError:
    """The one line refusing a setting given under its old name ``old`` and its new one, the values differing."""
    new = RENAMED_KEYS[old]
    return PreftuneError(
        f"{where}: {old}={old_value!r} and {new}={new_value!r} are one setting ({old} is its old name): give {new} only"
    )


def rename_old_keys(tree: dict[str, Any], where: str) -> list[str]:
    """The old keys of :data:`RENAMED_KEYS` in a nested mapping (a YAML file's ``online: {top_p: 0.9}``,
    a saved run record) moved, in place, to their new ones (``sampling: {top_p: 0.9}``); the old
    keys found. An old and a new key with different values are refused (``where`` names the source)."""
    used = []
    for old, new in RENAMED_KEYS.items():
        (old_section, old_leaf), (new_section, new_leaf) = old.split("."), new.split(".")
        section = tree.get(old_section)
        if not isinstance(section, dict) or old_leaf not in section:
            continue
        if tree.get(new_section) is None:
            tree[new_section] = {}
        target = tree[new_section]
        if not isinstance(target, dict):
            continue  # not a mapping: the schema check names the section
        value = section.pop(old_leaf)
        if new_leaf in target and target[new_leaf] != value:
            raise both_spellings_error(old, value, target[new_leaf], where)
        target[new_leaf] = value
        used.append(old)
    return used


@dataclass
class RunConfig:
    """Everything a training run needs; YAML files and ``key=value`` overrides fill it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    sampling: SamplingSettings = field(default_factory=SamplingSettings)
    objective: str = "dpo"
    reference: str = "auto"
    ref_refresh: RefreshConfig = field(default_factory=RefreshConfig)  # TR-DPO: the reference moves to the policy
    stages: list[StageConfig] = field(default_factory=list)
    output_dir: str = "out/run"
    save_every: int = 50  # steps between checkpoints
    keep_checkpoints: int = 2
    merge_lora: bool = False  # also write merged full weights at the end
    logit_chunk: int = 1024  # response positions per LM-head chunk
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    resume: bool = False

    def __post_init__(self) -> None:
        resolve_defaults(self)

    def resolved_stages(self) -> list[StageConfig]:
        """The stages to run: the configured ones, or one stage from the top-level objective."""
        if self.stages:
            return list(self.stages)
        return [StageConfig(name="train", objective=self.objective, reference=self.reference)]


FULL_FINE_TUNING_LR = 1e-6  # TRL's DPOConfig default
LORA_LR = 5e-4


def resolve_defaults(config: RunConfig) -> RunConfig:
    """Fill the defaults that depend on other settings (the learning rate on LoRA); idempotent."""
    if config.optim.lr is None:
        config.optim.lr = LORA_LR if config.lora.enabled else FULL_FINE_TUNING_LR
    return config


def to_dict(config: RunConfig) -> dict[str, Any]:
    """A plain dict of the config (for the summary and the saved run record)."""
    from dataclasses import asdict

    return asdict(config)
