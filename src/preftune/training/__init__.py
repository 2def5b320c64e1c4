"""The training engine: a :class:`Trainer` that reads steps from a batch source and runs hooks
around them (P3's unified loop, docs/methods.md §4).

- the trainer (:mod:`.loop`): one policy, one objective, one optimiser and schedule; ``fit``;
- sources (:mod:`.sources`, :mod:`.online`): a dataset through a :class:`BatchPlan`, a buffer of
  samples, rounds sampled from the policy (:class:`OnPolicySource`);
- hooks (:mod:`.hooks`, :mod:`.win_rates`, :mod:`.gradient_cosine_hook`): evaluation, checkpoints,
  progress, logging, the non-finite guard, user callbacks;
- checkpoints (:mod:`.checkpoint`), its own settings (:mod:`.settings`) and the one helper that makes
  an accelerator (:mod:`.accelerator`).

The engine knows no run: configs, checks, stages, outputs and reports are :mod:`preftune.run`'s,
which drives it (as the lab and any script may). ``tests/test_architecture.py`` holds that rule.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from preftune.training.accelerator import forget_accelerator_state, make_accelerator
    from preftune.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
    from preftune.training.gradient_cosine_hook import GradientCosineEvaluation, gradient_cosine_hooks
    from preftune.training.hooks import (
        Callbacks,
        Checkpoints,
        Fit,
        HeldOutEvaluation,
        Hook,
        Logging,
        Progress,
        RecordingHook,
        StepCallback,
        StopOnNonFinite,
        TrainResult,
    )
    from preftune.training.loop import Trainer, make_optimizer, make_plan, responses_read
    from preftune.training.online import (
        OnlineSettings,
        OnPolicySource,
        RoundCheckpoints,
        RoundLog,
        RoundStats,
        train_rounds,
    )
    from preftune.training.plan import BatchPlan
    from preftune.training.settings import EvalConfig, OptimConfig, RefreshConfig
    from preftune.training.sources import BatchSource, BufferSource, DatasetSource, PlannedSource

_HOME = {  # each public name and the module it lives in; imported on first use
    "BatchPlan": "preftune.training.plan",
    "BatchSource": "preftune.training.sources",
    "BufferSource": "preftune.training.sources",
    "Callbacks": "preftune.training.hooks",
    "Checkpoints": "preftune.training.hooks",
    "DatasetSource": "preftune.training.sources",
    "EvalConfig": "preftune.training.settings",
    "RefreshConfig": "preftune.training.settings",
    "Fit": "preftune.training.hooks",
    "gradient_cosine_hooks": "preftune.training.gradient_cosine_hook",
    "forget_accelerator_state": "preftune.training.accelerator",
    "GradientCosineEvaluation": "preftune.training.gradient_cosine_hook",
    "HeldOutEvaluation": "preftune.training.hooks",
    "Hook": "preftune.training.hooks",
    "latest_checkpoint": "preftune.training.checkpoint",
    "load_checkpoint": "preftune.training.checkpoint",
    "Logging": "preftune.training.hooks",
    "make_accelerator": "preftune.training.accelerator",
    "make_optimizer": "preftune.training.loop",
    "make_plan": "preftune.training.loop",
    "OnlineSettings": "preftune.training.online",
    "OnPolicySource": "preftune.training.online",
    "OptimConfig": "preftune.training.settings",
    "PlannedSource": "preftune.training.sources",
    "Progress": "preftune.training.hooks",
    "RecordingHook": "preftune.training.hooks",
    "responses_read": "preftune.training.loop",
    "RoundCheckpoints": "preftune.training.online",
    "RoundLog": "preftune.training.online",
    "RoundStats": "preftune.training.online",
    "save_checkpoint": "preftune.training.checkpoint",
    "StepCallback": "preftune.training.hooks",
    "StopOnNonFinite": "preftune.training.hooks",
    "train_rounds": "preftune.training.online",
    "Trainer": "preftune.training.loop",
    "TrainResult": "preftune.training.hooks",
}

__all__ = [
    "BatchPlan",
    "BatchSource",
    "BufferSource",
    "Callbacks",
    "Checkpoints",
    "DatasetSource",
    "EvalConfig",
    "Fit",
    "GradientCosineEvaluation",
    "HeldOutEvaluation",
    "Hook",
    "Logging",
    "OnPolicySource",
    "OnlineSettings",
    "OptimConfig",
    "PlannedSource",
    "Progress",
    "RecordingHook",
    "RefreshConfig",
    "RoundCheckpoints",
    "RoundLog",
    "RoundStats",
    "StepCallback",
    "StopOnNonFinite",
    "TrainResult",
    "Trainer",
    "forget_accelerator_state",
    "gradient_cosine_hooks",
    "latest_checkpoint",
    "load_checkpoint",
    "make_accelerator",
    "make_optimizer",
    "make_plan",
    "responses_read",
    "save_checkpoint",
    "train_rounds",
]


def __getattr__(name: str) -> Any:
    # The engine's names are imported when first asked for: ``preftune.training.settings`` (what a
    # run's config holds) must not pull torch and transformers in with this package.
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'preftune.training' has no attribute {name!r}")
