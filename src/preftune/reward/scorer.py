"""``RewardModel``: a saved reward model as a scorer of (prompt, completion) pairs.

    >>> rm = RewardModel("out/rm")
    >>> rm.score(["What is 2+2?", "What is 2+2?"], ["4", "5"])
    [1.93, -0.41]

Prompts are strings (one user turn) or message lists; completions are strings (one assistant turn).
Each is rendered through the tokenizer's chat template exactly as ``preftune train-rm`` rendered its
pairs, with the run's ``max_length`` (read from the folder's ``metrics.json``) unless one is given.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch

from preftune.errors import PreftuneError
from preftune.modeling.loading import resolve_model
from preftune.reward.config import METRICS_FILE
from preftune.reward.data import encode_completions
from preftune.reward.model import load_reward_model, load_reward_tokenizer, score_rows

DEFAULT_MAX_LENGTH = 512


def trained_lengths(folder: Path) -> tuple[int | None, int | None]:
    """(max_length, max_prompt_length) of the run that saved ``folder`` (None when it says nothing)."""
    path = folder / METRICS_FILE
    if not path.is_file():
        return None, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))["config"]["data"]
        return data.get("max_length"), data.get("max_prompt_length")
    except (ValueError, KeyError, TypeError):
        return None, None


def folder_fingerprint(folder: Path) -> str:
    """A sha256 of every file the model's answers depend on (weights, config, tokenizer), by name and content.

    ``metrics.json`` is left out. Reads the weights once (about a second per 500 MB).
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.name != METRICS_FILE):
        digest.update(f"{path.name}|{path.stat().st_size}|".encode())
        with path.open("rb") as handle:
            digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


class RewardModel:
    """Scores (prompt, completion) pairs with a sequence-classification reward model (higher is better).

    Args:
        path_or_name: a folder saved by ``preftune train-rm`` (or any checkpoint with a trained
            one-label head), a built-in name or a hub name.
        batch_size: rows per forward pass (sorted by length first).
        max_length: the most tokens of prompt + completion (default: the training run's, else 512).
        device: where the model runs (default: CUDA when available, else CPU).

    Raises:
        PreftuneError: no such model, or one without a trained reward head.
    """

    def __init__(
        self,
        path_or_name: str | os.PathLike[str],
        batch_size: int = 16,
        max_length: int | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        if batch_size < 1:
            raise PreftuneError(f"batch_size must be at least 1, not {batch_size}")
        self.name = os.fspath(path_or_name)
        self.folder = Path(resolve_model(self.name))
        trained_max, trained_prompt = trained_lengths(self.folder) if self.folder.is_dir() else (None, None)
        self.max_length = max_length or trained_max or DEFAULT_MAX_LENGTH
        self.max_prompt_length = trained_prompt if max_length is None else None
        self.batch_size = batch_size
        self.tokenizer = load_reward_tokenizer(self.name)
        self.model = load_reward_model(self.name, self.tokenizer, require_head=True)
        self.model.to(device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()

    def encode(self, prompts: list[Any], completions: list[str]) -> list[list[int]]:
        """Token rows of each prompt + completion, as training rendered them."""
        return encode_completions(self.tokenizer, prompts, completions, self.max_length, self.max_prompt_length)

    def score(self, prompts: list[str | list[dict[str, str]]], completions: list[str]) -> list[float]:
        """The reward of each ``(prompt, completion)``, batched, without gradients."""
        rows = self.encode(list(prompts), list(completions))
        return score_rows(self.model, rows, self.tokenizer.pad_token_id, self.batch_size)
