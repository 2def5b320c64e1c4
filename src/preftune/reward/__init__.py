"""Bradley–Terry reward models: ``preftune train-rm`` and a scorer of (prompt, completion) pairs.

    >>> from preftune.reward import RewardConfig, prepare, train_reward_model, RewardModel
    >>> result = train_reward_model(prepare(RewardConfig(model="tiny-random", output_dir="out/rm")))
    >>> RewardModel("out/rm").score(["What is 2+2?"], ["4"])

Imports ``data``, ``modeling`` and the leaves; never ``training`` or ``evaluation``.
"""

from preftune.reward.config import METRICS_FILE, RewardConfig, check_config
from preftune.reward.model import load_reward_model, load_reward_tokenizer, save_reward_model
from preftune.reward.scorer import RewardModel, folder_fingerprint
from preftune.reward.train import (
    PairAccuracy,
    Prepared,
    RewardResult,
    bt_loss,
    evaluate_pairs,
    prepare,
    train_reward_model,
)

__all__ = [
    "METRICS_FILE",
    "PairAccuracy",
    "Prepared",
    "RewardConfig",
    "RewardModel",
    "RewardResult",
    "bt_loss",
    "check_config",
    "evaluate_pairs",
    "folder_fingerprint",
    "load_reward_model",
    "load_reward_tokenizer",
    "prepare",
    "save_reward_model",
    "train_reward_model",
]
