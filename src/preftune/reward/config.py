"""``preftune train-rm`` settings: the model, the pairs (``data.*`` as ``preftune train`` reads them),
the optimiser and where the reward model goes; checked before anything loads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from preftune.data.config import DataConfig
from preftune.errors import PreftuneError

METRICS_FILE = "metrics.json"  # what a run saved beside the weights (settings, held-out accuracy)


PRECISIONS = ("auto", "bf16", "no")


@dataclass
class RewardConfig:
    """One reward-model run.

    Attributes:
        model: a built-in name (``tiny-random``, ``smollm2-135m-instruct``), a folder or a hub name.
        output_dir: the folder the reward model is saved to (must not exist, or be empty).
        data: where the pairs come from and how they are cut (``DataConfig``: ``train``, ``eval``,
            ``eval_size``, ``split_by``, ``train_size``, ``format``, ``columns``, ``max_length``, ...).
        lora: LoRA adapters (merged into the weights before saving) instead of full fine-tuning.
        lora_rank, lora_alpha, target_modules: the adapters (the score head is always trained fully).
        lora_last_layers: adapt only the last N decoder layers (a cheaper backward pass).
        epochs, lr, batch_size, weight_decay: AdamW over ``epochs`` passes of ``batch_size`` pairs.
        seed: the score head's initialisation and the order of the pairs (same seed, same model).
        chat_template: for a tokenizer without one (``chatml``, ``zephyr``, a .jinja file).
        precision: ``auto`` (bf16 autocast where the hardware multiplies bf16 natively:
            :func:`preftune.modeling.precision.auto_mixed_precision`), ``bf16`` or ``no`` (float32).
    """

    model: str = "smollm2-135m-instruct"
    output_dir: str = "rm-out"
    data: DataConfig = field(default_factory=DataConfig)
    lora: bool = True
    lora_rank: int = 16
    lora_alpha: float = 32.0
    target_modules: str = "all-linear"
    lora_last_layers: int | None = None
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 8
    weight_decay: float = 0.0
    seed: int = 0
    chat_template: str | None = None
    precision: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (saved in ``metrics.json``)."""
        return asdict(self)


def check_config(config: RewardConfig) -> None:
    """Refuse impossible settings and an output folder that is in use, before anything loads.

    Raises:
        PreftuneError: one line naming the setting.
    """
    whole = {"epochs": config.epochs, "batch_size": config.batch_size, "lora_rank": config.lora_rank}
    for name, value in whole.items():
        if not isinstance(value, int) or value < 1:
            raise PreftuneError(f"{name} must be a whole number of at least 1, not {value}")
    if config.lora_last_layers is not None and config.lora_last_layers < 1:
        raise PreftuneError(f"lora_last_layers must be at least 1, not {config.lora_last_layers}")
    if config.precision not in PRECISIONS:
        raise PreftuneError(f"precision must be one of {', '.join(PRECISIONS)}, not {config.precision!r}")
    if not (math.isfinite(config.lr) and config.lr > 0):
        raise PreftuneError(f"lr must be a finite number above 0, not {config.lr}")
    if not (math.isfinite(config.weight_decay) and config.weight_decay >= 0):
        raise PreftuneError(f"weight_decay must be a finite number of 0 or more, not {config.weight_decay}")
    if config.data.max_length < 2:
        raise PreftuneError(f"max_length must be at least 2, not {config.data.max_length}")
    if config.data.train_size is not None and config.data.train_size < 1:
        raise PreftuneError(f"train_size must be at least 1, not {config.data.train_size}")
    out = Path(config.output_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PreftuneError(f"output folder '{out}' already exists and is not empty: choose another or remove it")
