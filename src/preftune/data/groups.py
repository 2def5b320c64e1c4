"""Groups of responses to one prompt, as token ids: C completions with their rewards.

A :class:`TokenizedGroup` is what a batch of groups is built from, as a
:class:`~preftune.data.tokenize.TokenizedPair` is for pairs: ranked completions read offline
(OpenAssistant trees, rows with ``completions`` and ``scores`` or ``ranks``), or the samples of
one on-policy round with the rewards their labeller gave.
"""

from __future__ import annotations

from dataclasses import dataclass

from preftune.data.examples import Origin
from preftune.errors import PreftuneError


@dataclass(frozen=True)
class TokenizedGroup:
    """Token ids of C responses to one prompt.

    Attributes:
        prompt_ids: ``[P]`` the prompt, chat template and generation prompt included.
        responses: C response id lists, each with its closing end-of-turn token when it has one.
        rewards: C scalar rewards (higher is better), or None when unlabelled.
        origin: the file and row (or the round and prompt) it came from.
        finished: for sampled responses, whether each ended by itself (False: cut by the length limit).
        prompt_truncated: whether the prompt was cut (from the left).
        responses_truncated: how many responses were cut (from the right).
    """

    prompt_ids: list[int]
    responses: tuple[list[int], ...]
    rewards: tuple[float, ...] | None
    origin: Origin
    finished: tuple[bool, ...] | None = None
    prompt_truncated: bool = False
    responses_truncated: int = 0

    def __post_init__(self) -> None:
        if not self.responses:
            raise PreftuneError(f"{self.origin}: a group needs at least one response")
        if self.rewards is not None and len(self.rewards) != len(self.responses):
            raise PreftuneError(f"{self.origin}: {len(self.rewards)} rewards for {len(self.responses)} responses")
        if self.finished is not None and len(self.finished) != len(self.responses):
            flags, responses = len(self.finished), len(self.responses)
            raise PreftuneError(f"{self.origin}: {flags} finished flags for {responses} responses")

    @property
    def num_responses(self) -> int:
        return len(self.responses)

    def branch(self, k: int) -> tuple[list[int], list[int]]:
        """``(prompt ids, response ids)`` of the k-th response."""
        return self.prompt_ids, self.responses[k]

    @property
    def length(self) -> int:
        """Tokens of the longest row (prompt + response)."""
        return len(self.prompt_ids) + max(len(r) for r in self.responses)
