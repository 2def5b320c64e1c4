"""Log-prob records: what an objective sees instead of a model.

A record holds, for each response, its summed log-likelihood S(y), its token count n and,
where a term needs them, the per-token log-probs (docs/methods.md §1). Records for the policy carry
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
        collision: ``[*batch, T]`` per-token log Σ_v π(v | x, y_<t)², the log-probability that two
            draws of the next token agree (WPO's normaliser); ``None`` unless a term asks for it.
    """

    sum: Tensor
    count: Tensor
    tokens: Tensor | None = None
    mask: Tensor | None = None
    collision: Tensor | None = None

    def __post_init__(self) -> None:
        # Shapes are checked here, once, because a [B, 1] field against a [B] one would broadcast into a
        # [B, B] loss without a word.
        for name in ("sum", "count"):
            if not isinstance(getattr(self, name), Tensor):
                raise SpecError(f"log-prob record: {name} must be a tensor, got {type(getattr(self, name)).__name__}")
        if self.sum.shape != self.count.shape:
            raise SpecError(f"log-prob record: sum {_shape(self.sum)} and count {_shape(self.count)} differ in shape")
        if (self.tokens is None) != (self.mask is None):
            raise SpecError("log-prob record: tokens and mask come together (both or neither)")
        if self.tokens is not None and self.mask is not None:
            if self.tokens.shape != self.mask.shape:
                raise SpecError(f"tokens {_shape(self.tokens)} and mask {_shape(self.mask)} differ in shape")
            if self.mask.dtype != torch.bool:
                raise SpecError(f"log-prob record: mask must be bool, got {self.mask.dtype}")
            if self.tokens.shape[:-1] != self.sum.shape:
                raise SpecError(
                    f"log-prob record: tokens {_shape(self.tokens)} must be sum's shape {_shape(self.sum)} plus one "
                    "token axis"
                )
        if self.collision is not None and (self.tokens is None or self.collision.shape != self.tokens.shape):
            raise SpecError("log-prob record: collision needs tokens of the same shape")

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """The shape of ``sum`` and ``count``: ``(B,)`` for pairs, ``(P, C)`` for groups."""
        return tuple(self.sum.shape)

    @classmethod
    def from_tokens(cls, tokens: Tensor, mask: Tensor, collision: Tensor | None = None) -> SequenceLogProbs:
        """Build from per-token log-probs ``[*batch, T]`` and a response mask ``[*batch, T]``
        (and, for WPO, per-token log Σ_v π(v)² of the same shape).

        ``sum`` is derived from ``tokens``, so gradients with respect to ``tokens`` flow
        through every term, including those that only read ``sum`` (the gradient analysis
        relies on this).
        """
        mask = mask.bool()
        if tokens.shape != mask.shape:
            raise SpecError(f"tokens {tuple(tokens.shape)} and mask {tuple(mask.shape)} differ in shape")
        masked = tokens.masked_fill(~mask, 0.0)
        if collision is not None:
            collision = collision.masked_fill(~mask, 0.0)
        count = mask.sum(-1).to(tokens.dtype)
        return cls(sum=masked.sum(-1), count=count, tokens=masked, mask=mask, collision=collision)

    def score(self, average: bool) -> Tensor:
        """``[*batch]`` A(y) = S(y)/n when ``average`` (P2's averaging operator), else S(y)."""
        return self.sum / self.count if average else self.sum

    @property
    def mean(self) -> Tensor:
        """``[*batch]`` A(y), the per-token mean log-likelihood."""
        return self.sum / self.count

    def response(self, k: int) -> SequenceLogProbs:
        """The k-th response of each example of a ``[B, C]`` record, as a ``[B]`` record."""
        if len(self.batch_shape) != 2:
            raise SpecError(f"log-prob record: response(k) needs a [B, C] record, this one is {self.batch_shape}")
        return SequenceLogProbs(
            self.sum[:, k],
            self.count[:, k],
            None if self.tokens is None else self.tokens[:, k],
            None if self.mask is None else self.mask[:, k],
            None if self.collision is None else self.collision[:, k],
        )

    def detach(self) -> SequenceLogProbs:
        """The same record with no gradient (for metrics and references)."""
        return SequenceLogProbs(
            self.sum.detach(),
            self.count.detach(),
            None if self.tokens is None else self.tokens.detach(),
            self.mask,
            None if self.collision is None else self.collision.detach(),
        )


@dataclass(frozen=True)
class PairRecord:
    """Policy (and optionally reference) log-probs of chosen/rejected responses, ``[B]`` pairs.

    ``rejected`` may be ``None`` for terms that only reward good examples (``mle``);
    ``ref_chosen``/``ref_rejected`` may be ``None`` for terms that need no reference.
    ``kl_estimate``: ``[]`` the mean of S(y'|x) - S_ref(y'|x) over the batch's mismatched pairs (each
    prompt followed by another example's response), averaged over every process; a constant, which
    ``kto`` reads as its reference point (see :mod:`preftune.objectives.kto`). None unless a term needs it.
    """

    chosen: SequenceLogProbs
    rejected: SequenceLogProbs | None = None
    ref_chosen: SequenceLogProbs | None = None
    ref_rejected: SequenceLogProbs | None = None
    kl_estimate: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.chosen, SequenceLogProbs):
            raise SpecError(f"PairRecord: chosen must be a SequenceLogProbs, got {type(self.chosen).__name__}")
        if len(self.chosen.batch_shape) != 1:
            raise SpecError(f"PairRecord: fields must be [B] (one value per pair), chosen is {self.chosen.batch_shape}")
        for name in ("rejected", "ref_chosen", "ref_rejected"):
            _same_shape(getattr(self, name), name, self.chosen.batch_shape, "PairRecord", "chosen")
        kl = self.kl_estimate
        if kl is not None and not (isinstance(kl, Tensor) and kl.numel() == 1):
            got = _shape(kl) if isinstance(kl, Tensor) else type(kl).__name__
            raise SpecError(f"PairRecord: kl_estimate must be a one-value tensor (one estimate per batch), got {got}")

    @property
    def batch_size(self) -> int:
        return int(self.chosen.sum.shape[0])


@dataclass(frozen=True)
class GroupRecord:
    """C sampled responses for each of P prompts with scalar rewards (P3's on-policy setting).

    Attributes:
        samples: policy log-probs, fields shaped ``[P, C]`` (tokens ``[P, C, T]``).
        rewards: ``[P, C]`` scalar rewards r(x, y); NaN marks a response the group lacks (ragged ranked
            groups padded to one size, :func:`~preftune.data.groups.pad_groups`), which
            :class:`~preftune.objectives.WithinGroups` pairs with nothing and every on-policy term
            refuses (:mod:`~preftune.objectives.policy_gradient`: there a NaN is a failed label).
        ref: reference log-probs ``[P, C]``, needed only for a KL penalty.
        baseline: ``[P, C]`` an externally maintained baseline (e.g. a moving average),
            used by ``reinforce(baseline="given")``.
    """

    samples: SequenceLogProbs
    rewards: Tensor
    ref: SequenceLogProbs | None = None
    baseline: Tensor | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.samples, SequenceLogProbs):
            raise SpecError(f"GroupRecord: samples must be a SequenceLogProbs, got {type(self.samples).__name__}")
        if not isinstance(self.rewards, Tensor) or self.rewards.ndim != 2:
            shape = _shape(self.rewards) if isinstance(self.rewards, Tensor) else type(self.rewards).__name__
            raise SpecError(f"GroupRecord: rewards must be a [prompts, samples] tensor, got {shape}")
        shape = tuple(self.rewards.shape)
        _same_shape(self.samples, "samples", shape, "GroupRecord", "rewards")
        _same_shape(self.ref, "ref", shape, "GroupRecord", "rewards")
        if self.baseline is not None and not (isinstance(self.baseline, Tensor) and self.baseline.shape == shape):
            got = _shape(self.baseline) if isinstance(self.baseline, Tensor) else type(self.baseline).__name__
            raise SpecError(f"GroupRecord: baseline {got} and rewards {shape} differ in shape")
        if self.baseline is not None and not bool(torch.isfinite(self.baseline).all()):
            raise SpecError("GroupRecord: the baseline must be finite, it holds NaN or inf")

    @property
    def batch_size(self) -> int:
        return int(self.rewards.shape[0])


Record = PairRecord | GroupRecord


def record_for(
    record_type: type,
    policy: SequenceLogProbs,
    reference: SequenceLogProbs | None = None,
    rewards: Tensor | None = None,
    kl_estimate: Tensor | None = None,
) -> Record:
    """The record an objective reads, from ``[B, C]`` log-probs of the policy (and reference).

    ``PairRecord``: response 0 is the chosen, response 1 (when C = 2) the rejected one, with
    ``kl_estimate`` (``[]``, mismatched pairs' mean log-ratio) where a term reads it;
    ``GroupRecord``: the C responses are the samples, ``rewards [B, C]`` their rewards.
    """
    if len(policy.batch_shape) != 2:
        raise SpecError(f"record_for: the policy's log-probs must be [B, C], got {policy.batch_shape}")
    if record_type is GroupRecord:
        if rewards is None:
            raise SpecError("this objective reads rewards, and the batch carries none: the data must be labelled")
        return GroupRecord(policy, rewards.to(policy.sum.device), reference)
    c = policy.batch_shape[1]
    if c > 2:
        raise SpecError(f"a pairwise objective reads one or two responses per example, the batch has {c}")
    second = lambda r: r.response(1) if c == 2 else None  # noqa: E731
    return PairRecord(
        policy.response(0),
        second(policy),
        None if reference is None else reference.response(0),
        None if reference is None else second(reference),
        kl_estimate,
    )


def _shape(x: Tensor) -> tuple[int, ...]:
    return tuple(x.shape)


def _same_shape(record: object, name: str, shape: tuple[int, ...], owner: str, against: str) -> None:
    """Refuse an optional log-prob record whose batch shape differs from ``shape`` (that of ``against``)."""
    if record is None:
        return
    if not isinstance(record, SequenceLogProbs):
        raise SpecError(f"{owner}: {name} must be a SequenceLogProbs or None, got {type(record).__name__}")
    if record.batch_shape != shape:
        raise SpecError(f"{owner}: {name} {record.batch_shape} and {against} {shape} differ in shape")


def require(value: object, what: str, term: str) -> None:
    """Refuse a record that lacks a field ``term`` needs, naming both."""
    if value is None:
        raise SpecError(f"objective term '{term}' needs {what}, which this record does not have")


def as_float(x: Tensor) -> Tensor:
    """Promote half precision to float32 so losses are computed in full precision."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
