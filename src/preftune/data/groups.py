"""The one tokenised item: a prompt and C responses as token ids. A pair is a group of two.

Every batch is built from :class:`TokenizedGroup`\\ s, whatever they came from: preference pairs
(C = 2, responses in (chosen, rejected) order, no rewards), ranked completions read offline
(OpenAssistant trees, rows with ``completions`` and ``scores`` or ``ranks``), or the samples of
one on-policy round with the rewards their labeller gave. :func:`TokenizedPair` builds a pair.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from preftune.data.examples import Origin, PreferenceExample, Text
from preftune.data.ranked import rank_pairs
from preftune.errors import PreftuneError


@dataclass(frozen=True)
class TokenizedGroup:
    """Token ids of C responses to one prompt (plain lists; :func:`preftune.data.collate` makes tensors).

    Attributes:
        prompt_ids: ``[P]`` the prompt, chat template and generation prompt included.
        responses: C response id lists ``[R_k]``, each with its closing end-of-turn/EOS token when it has
            one; for a pair (chosen, rejected).
        rewards: C scalar rewards (higher is better), or None when unlabelled (preference pairs).
        origin: the file and row (or the round and prompt) it came from.
        finished: for sampled responses, whether each ended by itself (False: cut by the length limit).
        prompt_truncated: whether a prompt of the group was cut (from the left).
        responses_truncated: how many responses were cut (from the right).
        own_prompts: per response, ``[P_k]`` a prompt of its own that it follows instead of
            ``prompt_ids`` (the rejected response of unpaired data), or None; None when no response has one.
    """

    prompt_ids: list[int]
    responses: tuple[list[int], ...]
    rewards: tuple[float, ...] | None
    origin: Origin
    finished: tuple[bool, ...] | None = None
    prompt_truncated: bool = False
    responses_truncated: int = 0
    own_prompts: tuple[list[int] | None, ...] | None = None

    def __post_init__(self) -> None:
        if not self.responses:
            raise PreftuneError(f"{self.origin}: a group needs at least one response")
        if self.rewards is not None and len(self.rewards) != len(self.responses):
            raise PreftuneError(f"{self.origin}: {len(self.rewards)} rewards for {len(self.responses)} responses")
        if self.finished is not None and len(self.finished) != len(self.responses):
            flags, responses = len(self.finished), len(self.responses)
            raise PreftuneError(f"{self.origin}: {flags} finished flags for {responses} responses")
        if self.own_prompts is not None and len(self.own_prompts) != len(self.responses):
            prompts, responses = len(self.own_prompts), len(self.responses)
            raise PreftuneError(f"{self.origin}: {prompts} own prompts for {responses} responses")

    @classmethod
    def pair(
        cls,
        prompt_ids: list[int],
        chosen_ids: list[int],
        rejected_ids: list[int],
        origin: Origin,
        rejected_prompt_ids: list[int] | None = None,
        prompt_truncated: bool = False,
        responses_truncated: int = 0,
    ) -> TokenizedGroup:
        """A preference pair: the group of its two responses, chosen first; ``rejected_prompt_ids``
        ``[P']``: the rejected response's own prompt (unpaired data only)."""
        own = None if rejected_prompt_ids is None else (None, rejected_prompt_ids)
        responses = (chosen_ids, rejected_ids)
        return cls(prompt_ids, responses, None, origin, None, prompt_truncated, responses_truncated, own)

    @property
    def num_responses(self) -> int:
        return len(self.responses)

    def branch(self, k: int) -> tuple[list[int], list[int]]:
        """``(prompt ids, response ids)`` of the k-th response (after its own prompt if it has one)."""
        own = None if self.own_prompts is None else self.own_prompts[k]
        return (self.prompt_ids if own is None else own), self.responses[k]

    @property
    def length(self) -> int:
        """Tokens of the longest row (prompt + response)."""
        return max(len(prompt) + len(response) for prompt, response in map(self.branch, range(self.num_responses)))

    def _pair_index(self, k: int) -> int:
        """``k``, once this group is a pair (chosen and rejected mean nothing for C != 2)."""
        if self.num_responses != 2:
            raise ValueError(
                f"{self.origin}: chosen and rejected name a pair's responses, not those of a group of "
                f"{self.num_responses}"
            )
        return k

    @property
    def chosen_ids(self) -> list[int]:
        """``[Rc]`` a pair's chosen response (response 0)."""
        return self.responses[self._pair_index(0)]

    @property
    def rejected_ids(self) -> list[int]:
        """``[Rr]`` a pair's rejected response (response 1)."""
        return self.responses[self._pair_index(1)]

    @property
    def rejected_prompt_ids(self) -> list[int] | None:
        """``[P']`` a pair's rejected response's own prompt (unpaired data), or None."""
        k = self._pair_index(1)
        return None if self.own_prompts is None else self.own_prompts[k]


def pad_groups(groups: Sequence[TokenizedGroup], filler: int) -> list[TokenizedGroup]:
    """Every group given as many responses as the largest (a batch is ``[B, C]``), each missing one a
    one-token response ``[filler]`` with a NaN reward: no pair ever holds it (every comparison with
    NaN is false, :func:`~preftune.objectives.pairs_within`), and it costs one token of a forward pass.

    For ragged ranked groups trained on the pairs within them (offline ``data.pairing=all``); groups
    of one size come back as they are.
    """
    widest = max((g.num_responses for g in groups), default=0)
    out = []
    for g in groups:
        missing = widest - g.num_responses
        if missing and g.rewards is None:
            raise PreftuneError(f"{g.origin}: a group without rewards cannot be padded (its pairs are its order)")
        if missing:
            finished = None if g.finished is None else (*g.finished, *([True] * missing))
            own = None if g.own_prompts is None else (*g.own_prompts, *([None] * missing))
            responses = (*g.responses, *([[filler]] * missing))
            rewards = (*g.rewards, *([math.nan] * missing))
            g = replace(g, responses=responses, rewards=rewards, finished=finished, own_prompts=own)
        out.append(g)
    return out


TokenizedPair = TokenizedGroup.pair
"""A preference pair as the one item type: ``TokenizedPair(prompt_ids, chosen_ids, rejected_ids, origin,
rejected_prompt_ids=None, prompt_truncated=False, responses_truncated=0)`` -> a :class:`TokenizedGroup` of two."""


@dataclass(frozen=True)
class GroupExample:
    """A prompt with C completions and their rewards (higher is better).

    Attributes:
        prompt: a string (text data) or a list of messages ending with a user turn (conversational).
        completions: the completions, same kind as ``prompt`` (assistant message lists when conversational).
        rewards: one per completion; for ranked data −rank, so the best (rank 0) has reward 0.
        origin: the file and row; for trees, ``part`` names the turn (``turn 2, replies to prompt``).
    """

    prompt: Text
    completions: tuple[Text, ...]
    rewards: tuple[float, ...]
    origin: Origin

    def __post_init__(self) -> None:
        if len(self.rewards) != len(self.completions):
            raise PreftuneError(f"{self.origin}: {len(self.rewards)} rewards for {len(self.completions)} completions")

    @property
    def is_conversational(self) -> bool:
        """True when the group holds message lists (the chat template applies)."""
        return isinstance(self.prompt, list)

    def best_vs_worst(self) -> PreferenceExample | None:
        """The first best completion against the first worst one, or None when every reward is equal.

        For scoring held-out groups with the pairwise metrics; the origin's part names the two
        (``completions 1 vs 3``, indices into this group's completions).
        """
        pairs = self.pairs("best_vs_worst")
        return pairs[0] if pairs else None

    def pairs(self, pairing: str, min_gap: float = 0.0) -> list[PreferenceExample]:
        """The group's preference pairs as :func:`~preftune.data.ranked.rank_pairs` forms them from its
        rewards (``all``: every pair whose rewards differ by more than ``min_gap``, better first), each
        origin's part naming the two (``completions 1 vs 3``, indices into this group's completions)."""
        out = []
        for better, worse in rank_pairs(list(self.rewards), lower_is_better=False, pairing=pairing, min_gap=min_gap):
            part = ", ".join(p for p in (self.origin.part, f"completions {better} vs {worse}") if p)
            origin = Origin(self.origin.source, self.origin.row, part)
            out.append(PreferenceExample(self.prompt, self.completions[better], self.completions[worse], origin))
        return out
