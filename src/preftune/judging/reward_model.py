"""A judge from a reward model: the completion with the higher reward is better.

    >>> judge = RewardModelJudge("out/rm")          # a folder saved by ``preftune train-rm``
    >>> judge.judge(["What is 2+2?"], [("4", "5")])
    [0]

An ordered call ``(first, second)`` answers FIRST when r(first) ≥ r(second), else SECOND; asked in
both orders (:class:`~preftune.judging.base.BothOrders`), equal rewards are therefore a tie. A NaN
reward is FAILED. Deterministic: no sampling. The model loads on the first :meth:`judge` call.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from preftune.judging.base import FAILED, FIRST, SECOND, PairwiseJudge
from preftune.modeling.loading import resolve_model
from preftune.reward.scorer import RewardModel, folder_fingerprint


def reward_verdict(first: float, second: float) -> int:
    """FIRST when ``first ≥ second``, SECOND when less, FAILED when either is NaN."""
    if math.isnan(first) or math.isnan(second):
        return FAILED
    return FIRST if first >= second else SECOND


class RewardModelJudge(PairwiseJudge):
    """Judges by the rewards of a sequence-classification reward model (see the module docstring).

    Args:
        path_or_name: a folder saved by ``preftune train-rm`` (or a built-in or hub name).
        batch_size: rows per forward pass.
        max_length: prompt + completion tokens (default: the training run's).
    """

    def __init__(self, path_or_name: str | os.PathLike[str], batch_size: int = 16, max_length: int | None = None):
        self.name = os.fspath(path_or_name)
        self.folder = Path(resolve_model(self.name))  # a missing folder is refused now, before any call
        self.batch_size = batch_size
        self.max_length = max_length
        self._scorer: RewardModel | None = None
        self._scores: dict[tuple[str, str], float] = {}  # (prompt, completion) -> reward: the other order is free

    def identity(self) -> str:
        """``rm:<folder>:<sha256 of its files>:max_length=<n>``: retraining into the same folder changes it."""
        where = str(self.folder.resolve()) if self.folder.is_dir() else self.name
        content = folder_fingerprint(self.folder) if self.folder.is_dir() else "unhashed"
        return f"rm:{where}:{content[:16]}:max_length={self.max_length or 'trained'}"

    @property
    def scorer(self) -> RewardModel:
        """The reward model, loaded on first use."""
        if self._scorer is None:
            self._scorer = RewardModel(self.name, batch_size=self.batch_size, max_length=self.max_length)
        return self._scorer

    def judge(self, prompts: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[int]:
        """FIRST or SECOND for each ``(prompt, (first, second))`` by the rewards of both, in one batched pass.

        Each (prompt, completion) is scored once per judge: asking the other order reuses its reward.
        """
        if not pairs:
            return []
        items = [(p, c) for p, pair in zip(prompts, pairs, strict=True) for c in pair]
        missing = list(dict.fromkeys(item for item in items if item not in self._scores))
        if missing:
            values = self.scorer.score([p for p, _ in missing], [c for _, c in missing])
            self._scores.update(zip(missing, values, strict=True))
        return [reward_verdict(self._scores[items[2 * i]], self._scores[items[2 * i + 1]]) for i in range(len(pairs))]
