"""Session fixtures: a separable pair file (the chosen response ends with "yes", the rejected with
"no") and one LoRA reward model trained on it once, on the tiny random model, for many tests."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from preftune.data.config import DataConfig
from preftune.reward import Prepared, RewardConfig, RewardResult, prepare, train_reward_model

TOPICS = ("cats", "dogs", "rain", "tea", "maps", "boats", "bread", "trees")


def write_marker_pairs(path: Path, n: int = 40, seed: int = 0) -> Path:
    """Pairs whose chosen response ends with the word "yes" and rejected with "no": a reward model can separate them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        topic = rng.choice(TOPICS)
        filler = " ".join(rng.choice(TOPICS) for _ in range(rng.randint(0, 4)))
        rows.append(
            {
                "prompt": f"Tell me about {topic}, item {i}.",
                "chosen": f"A note on {topic} {filler}. yes",
                "rejected": f"A note on {topic} {filler}. no",
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def marker_pairs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_marker_pairs(tmp_path_factory.mktemp("rm-data") / "pairs.jsonl")


def tiny_config(data: Path, out: Path, **changes) -> RewardConfig:
    """A fast run on the tiny model: 40 pairs, 12 held out, LoRA rank 8, lr 1e-2, 2 epochs."""
    settings = {
        "model": "tiny-random",
        "output_dir": str(out),
        "lora_rank": 8,
        "lr": 1e-2,
        "epochs": 2,
        "precision": "no",
        "batch_size": 8,
        "data": DataConfig(train=str(data), eval_size=12, max_length=64),
    }
    settings.update(changes)
    return RewardConfig(**settings)


@pytest.fixture(scope="session")
def trained(marker_pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Prepared, RewardResult]:
    prepared = prepare(tiny_config(marker_pairs, tmp_path_factory.mktemp("rm") / "out"))
    return prepared, train_reward_model(prepared)
