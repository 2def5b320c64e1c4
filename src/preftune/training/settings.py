"""The engine's own settings: how the trainer optimises (:class:`OptimConfig`) and what its
evaluation hooks measure (:class:`EvalConfig`). A run's config (:mod:`preftune.run.config`) holds
one of each; the lab and any script drive the engine with these alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class OptimConfig:
    """The optimiser, its schedule, and the batch arithmetic."""

    lr: float | None = None  # None: 1e-6 for full fine-tuning (TRL's default), 5e-4 with LoRA
    weight_decay: float = 0.0
    batch_size: int = 8  # global: pairs per optimiser step, over all processes and accumulation
    grad_accumulation: int = 1
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    warmup_ratio: float = 0.0  # TRL's (transformers') default: no warmup, so step 1 already moves the weights
    schedule: str = "linear"  # TRL's default; any transformers scheduler name: linear, cosine, constant_with_warmup...
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"  # auto | no | bf16 | fp16
    seed: int = 0
    max_bad_steps: int = 3  # consecutive non-finite losses before the run stops


@dataclass
class EvalConfig:
    """Periodic evaluation on the held-out pairs (docs/methods.md §6 statistics) and, with ``judges``, win
    rates of the policy's greedy answers to held-out prompts (:mod:`preftune.training.win_rates`)."""

    every: int = 0  # steps; 0: only before and after training
    batch_size: int = 16
    samples: int = 0  # held-out prompts answered (greedy) before and after training, for the summary
    max_new_tokens: int = 64
    judges: list[str] = field(default_factory=list)  # pairwise judges of the win rate; empty: no win rate
    baseline: str = "start"  # start (the starting policy's answers) | chosen (the held-out chosen responses)
    win_rate_every: int = 0  # steps; 0: at the end of each stage only
    win_rate_prompts: int = 24  # distinct held-out prompts answered
    gradient_cosine_every: int = 0  # steps; 0: off (:mod:`preftune.training.gradient_cosine_hook`, P3 Lemma 6.2)
    gradient_cosine_pairs: int = 8  # the first held-out pairs measured


REFRESH_MODES = ("none", "soft", "hard")


@dataclass
class RefreshConfig:
    """TR-DPO's reference refresh (Gorbatovski et al. 2024, eq. 5 and 6): after every ``every``-th
    optimiser step (τ), θ_ref ← α·θ + (1 - α)·θ_ref over the policy's trainable parameters.

    ``mode``: ``none`` (a fixed reference), ``soft`` (α = ``alpha``) or ``hard`` (α = 1: the reference
    becomes the policy; ``alpha`` is not read). TRL's ``sync_ref_model``, ``ref_model_mixup_alpha``
    and ``ref_model_sync_steps``, with TRL's defaults.
    """

    mode: str = "none"
    alpha: float = 0.6
    every: int = 512

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def mix(self) -> float:
        """α as the update applies it: ``alpha`` for ``soft``, 1 for ``hard``."""
        return 1.0 if self.mode == "hard" else float(self.alpha)
