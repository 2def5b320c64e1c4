"""Log-prob records: what an objective sees instead of a model.

A record holds, for each response, its summed log-likelihood S(y), its token count n and,
where a term needs them, the per-token log-probs (METHODS.md §1). Records for the policy carry
gradients; records for the reference are constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from preftune.errors import SpecError


@dataclass(frozen=True)
class SequenceLogProbs:
    """Log-probabilities of a batch of responses under one policy.

    Attributes:
        sum: ``[*batch]`` S(y) = Σ_t log π(y_t | x, y_<t) over response tokens only.
        count: ``[*batch]`` n = |y|, the number of response tokens (float, ≥ 1).
        tokens: ``[*batch, T]`` per-token log π(y_t | ...), zero where ``mask`` is False;
            ``None`` when only sums were computed.
        mask: ``[*batch, T]`` bool, True on response tokens; ``None`` iff ``tokens`` is.
    """

    sum: Tensor
    count: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None

    @classmethod
    def from_tokens(cls, tokens: Tensor, mask: Tensor) -> SequenceLogProbs:
        """Build from per-token log-probs ``[*batch, T]`` and a response mask ``[*batch, T]``.

        ``sum`` is derived from ``tokens``, so gradients with respect to ``tokens`` flow
        through every term, including those that only read ``sum`` (the gradient analysis
        relies on this).
        """
        mask = mask.bool()
        if tokens.shape != mask.shape:
            raise SpecError(f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} differ in shape")
        masked = tokens.masked_fill(~mask, 0.0)
        return cls(sum=masked.sum(-1), count=mask.sum(-1).to(tokens.dtype), tokens=masked, mask=mask)

    def score(self, average: bool) -> Tensor:
        """``[*batch]`` A(y) = S(y)/n when ``average`` (P2's averaging operator), else S(y)."""
        return self.sum / self.count if average else self.sum

    @property
    def mean(self) -> Tensor:
        """``[*batch]`` A(y), the per-token mean log-likelihood."""
        return self.sum / self.count

    def detach(self) -> SequenceLogProbs:
        """The same record with no gradient (for metrics and references)."""
        return SequenceLogProbs(
            self.sum.detach(),
            self.count.detach(),
            None if self.tokens is None else self.tokens.detach(),
            self.mask,
        )


@dataclass(frozen=True)
class PairRecord:
    """Policy (and optionally reference) log-probs of chosen/rejected responses, ``[B]`` pairs.

    ``rejected`` may be ``None`` for terms that only reward good examples (``mle``);
    ``ref_chosen``/``ref_rejected`` may be ``None`` for terms that need no reference.
    """

    chosen: SequenceLogProbs
    rejected: SequenceLogProbs | None = None
    ref_chosen: SequenceLogProbs | None = None
    ref_rejected: SequenceLogProbs | None = None

    @property
    def batch_size(self) -> int:
        return int(self.chosen.sum.shape[0])


@dataclass(frozen=True)
class GroupRecord:
    """C sampled responses for each of P prompts with scalar rewards (P3's on-policy setting).

    Attributes:
        samples: policy log-probs, fields shaped ``[P, C]`` (tokens ``[P, C, T]``).
        rewards: ``[P, C]`` scalar rewards r(x, y).
        ref: reference log-probs ``[P, C]``, needed only for a KL penalty.
        baseline: ``[P, C]`` an externally maintained baseline (e.g. a moving average),
            used by ``reinforce(baseline="given")``.
    """

    samples: SequenceLogProbs
    rewards: Tensor
    ref: SequenceLogProbs | None = None
    baseline: Tensor | None = None

    @property
    def batch_size(self) -> int:
        return int(self.rewards.shape[0])


Record = PairRecord | GroupRecord


def require(value: object, what: str, term: str) -> None:
    """Refuse a record that lacks a field ``term`` needs, naming both."""
    if value is None:
        raise SpecError(f"objective term '{term}' needs {what}, which this record does not have")


def as_float(x: Tensor) -> Tensor:
    """Promote half precision to float32 so losses are computed in full precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
