"""Holding out evaluation pairs without leakage (``data.eval_size``, ``data.split_by``).

A seeded shuffle of row indices holds out pairs whose copies, or other pairs on the same prompt,
stay in training: the held-out score then measures memory, not generalisation. So pairs are
grouped first, and the held-out set takes whole groups:

- ``group_by="prompt"`` (default): all pairs sharing an identical prompt form one group;
- ``group_by="pair"``: only identical pairs (same prompt, chosen and rejected) do.

Values are compared by their canonical JSON (keys sorted), so a text prompt and a message list
never match, while two message lists with the same content always do. Identical pairs are kept
(as TRL keeps them) and counted in :attr:`SplitSummary.duplicate_pairs`; under either grouping
they fall on one side of the split.

The groups, in order of first appearance, are shuffled with ``random.Random(seed)`` (seed 0
by default, whatever the training seed, so every run holds out the same pairs), and taken in
that order until the held-out pairs reach ``eval_size``: the last group taken may overshoot it
by fewer pairs than it holds, so the held-out set has at least ``eval_size`` pairs (exactly
``eval_size`` when every group is one pair). Both lists keep the source order.

Groups of ranked completions (:class:`~preftune.data.groups.GroupExample`) are held out by the
same split (:func:`split_whole` by :func:`prompt_key`), counted in groups by :func:`hold_out_groups`:
every group on one prompt falls on one side.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from preftune.data.examples import PreferenceExample
from preftune.errors import PreftuneError

if TYPE_CHECKING:
    from preftune.data.groups import GroupExample

GROUP_BY = ("prompt", "pair")
T = TypeVar("T")


def canonical(value: Any) -> str:
    """A value as canonical JSON: equal for equal content, whatever the key order."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def pair_key(example: PreferenceExample) -> str:
    """Identical for identical pairs (prompt, chosen, rejected, and an unpaired rejected's own prompt)."""
    return canonical([example.prompt, example.chosen, example.rejected, example.rejected_prompt])


def prompt_key(example: PreferenceExample | GroupExample) -> str:
    """Identical for pairs (or groups) on the same prompt."""
    return canonical(example.prompt)


def group_key(group: GroupExample) -> str:
    """Identical for identical groups (prompt, completions and rewards)."""
    return canonical([group.prompt, list(group.completions), list(group.rewards)])


@dataclass(frozen=True)
class Split(Generic[T]):
    """What :func:`split_whole` did: both sides, in source order, and the groups they were taken in.

    Attributes:
        train: the items left for training.
        held_out: the items held out.
        groups: the items' indices by key, groups in order of first appearance.
        held_out_groups: how many groups were held out.
    """

    train: list[T]
    held_out: list[T]
    groups: list[list[int]]
    held_out_groups: int

    @property
    def shared_groups(self) -> int:
        """Groups of more than one item."""
        return sum(len(g) > 1 for g in self.groups)

    @property
    def largest_group(self) -> int:
        """Items in the largest group (0 when there are none)."""
        return max((len(g) for g in self.groups), default=0)


def split_whole(items: Sequence[T], eval_size: int, key: Callable[[T], str], seed: int) -> Split[T]:
    """The one split: hold out whole groups of items (equal ``key``) until at least ``eval_size`` items.

    The groups, in order of first appearance, are shuffled with ``random.Random(seed)`` and taken in
    that order; both sides keep the source order.
    """
    by_key: dict[str, list[int]] = {}
    for index, item in enumerate(items):
        by_key.setdefault(key(item), []).append(index)
    groups = list(by_key.values())
    order = groups[:]
    random.Random(seed).shuffle(order)
    held: set[int] = set()
    taken = 0
    for members in order:
        if len(held) >= eval_size:
            break
        held.update(members)
        taken += 1
    train = [item for i, item in enumerate(items) if i not in held]
    held_out = [item for i, item in enumerate(items) if i in held]
    return Split(train, held_out, groups, taken)


AUTO_SHARE, AUTO_MAX = 10, 100  # data.eval_size unset: a tenth of the examples, at most 100


def resolve_eval_size(eval_size: int | None, total: int) -> int:
    """``data.eval_size`` as given, or when unset (None) a tenth of the ``total`` examples, at most 100:
    a dataset of a few dozen pairs keeps most of them for training [our choice; TRL holds out nothing
    unless given an eval set]."""
    return min(AUTO_MAX, total // AUTO_SHARE) if eval_size is None else eval_size


def _asked(eval_size: int, auto: bool) -> str:
    return f"data.eval_size unset: a tenth, at most {AUTO_MAX}" if auto else f"asked {eval_size}"


def _check_eval_size(eval_size: int, total: int, noun: str) -> None:
    if eval_size < 0:
        raise PreftuneError(f"data.eval_size must be 0 or more, not {eval_size}")
    if eval_size and eval_size >= total:
        raise PreftuneError(f"data.eval_size {eval_size} leaves no training {noun} out of {total}")


@dataclass(frozen=True)
class SplitSummary:
    """What :func:`hold_out` did.

    Attributes:
        group_by: ``"prompt"`` or ``"pair"``.
        seed: the seed of the group shuffle.
        eval_size: the held-out pairs asked for.
        pairs: the pairs split.
        duplicate_pairs: pairs identical to an earlier one (kept, and never across the split).
        groups: the groups the pairs form.
        shared_groups: groups of more than one pair.
        largest_group: pairs in the largest group.
        held_out: pairs held out (at least ``eval_size``; see the module docstring).
        held_out_groups: groups held out.
        train: pairs left for training.
        auto: ``eval_size`` was chosen (``data.eval_size`` unset: :func:`resolve_eval_size`).
    """

    group_by: str
    seed: int
    eval_size: int
    pairs: int
    duplicate_pairs: int
    groups: int
    shared_groups: int
    largest_group: int
    held_out: int
    held_out_groups: int
    train: int
    auto: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"held out {self.held_out} of {self.pairs} pairs ({_asked(self.eval_size, self.auto)}) in "
            f"{self.held_out_groups} whole "
            f"groups by {self.group_by} (seed {self.seed}), {self.train} for training; {self.groups} groups, "
            f"{self.shared_groups} of several pairs (largest {self.largest_group}); "
            f"{self.duplicate_pairs} duplicate pairs (kept)"
        )


def hold_out(
    examples: list[PreferenceExample], eval_size: int | None, *, group_by: str = "prompt", seed: int = 0
) -> tuple[list[PreferenceExample], list[PreferenceExample], SplitSummary]:
    """Split ``examples`` into training and held-out pairs, whole groups at a time (see the module docstring).

    Args:
        examples: the validated examples.
        eval_size: how many pairs to hold out (0: none).
        group_by: ``"prompt"`` (pairs sharing a prompt stay together) or ``"pair"`` (identical pairs do).
        seed: the seed of the group shuffle (keep it fixed so that runs hold out the same pairs).

    Returns:
        (training examples, held-out examples, summary), both lists in source order.

    Raises:
        PreftuneError: ``eval_size`` below 0, or one that leaves no training pairs.
    """
    if group_by not in GROUP_BY:
        raise PreftuneError(f"unknown data.split_by '{group_by}' (expected one of {', '.join(GROUP_BY)})")
    auto, eval_size = eval_size is None, resolve_eval_size(eval_size, len(examples))
    _check_eval_size(eval_size, len(examples), "pairs")
    split = split_whole(examples, eval_size, prompt_key if group_by == "prompt" else pair_key, seed)
    if split.held_out and not split.train:
        raise PreftuneError(
            f"data.eval_size {eval_size} leaves no training pairs: the {len(examples)} pairs form only "
            f"{len(split.groups)} groups by {group_by} and whole groups are held out; lower data.eval_size"
        )
    summary = SplitSummary(
        group_by=group_by,
        seed=seed,
        eval_size=eval_size,
        pairs=len(examples),
        duplicate_pairs=len(examples) - len({pair_key(e) for e in examples}),
        groups=len(split.groups),
        shared_groups=split.shared_groups,
        largest_group=split.largest_group,
        held_out=len(split.held_out),
        held_out_groups=split.held_out_groups,
        train=len(split.train),
        auto=auto,
    )
    return split.train, split.held_out, summary


@dataclass(frozen=True)
class GroupSplitSummary:
    """What :func:`hold_out_groups` did (:class:`SplitSummary`'s counts, for groups of completions).

    Attributes:
        seed: the seed of the prompt shuffle.
        eval_size: the held-out groups asked for.
        groups: the groups split.
        duplicate_groups: groups identical to an earlier one (kept, and never across the split).
        prompts: the distinct prompts of the groups.
        shared_prompts: prompts with more than one group.
        largest_prompt: groups on the most shared prompt.
        held_out: groups held out (at least ``eval_size``, as for :func:`hold_out`).
        held_out_prompts: prompts held out.
        train: groups left for training.
    """

    seed: int
    eval_size: int
    groups: int
    duplicate_groups: int
    prompts: int
    shared_prompts: int
    largest_prompt: int
    held_out: int
    held_out_prompts: int
    train: int
    auto: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        return (
            f"held out {self.held_out} of {self.groups} groups ({_asked(self.eval_size, self.auto)}) with "
            f"{self.held_out_prompts} "
            f"whole prompts (seed {self.seed}), {self.train} for training; {self.prompts} prompts, "
            f"{self.shared_prompts} with several groups (largest {self.largest_prompt}); "
            f"{self.duplicate_groups} duplicate groups (kept)"
        )


def hold_out_groups(
    groups: list[GroupExample], eval_size: int | None, *, seed: int = 0
) -> tuple[list[GroupExample], list[GroupExample], GroupSplitSummary]:
    """Split groups of completions into training and held-out groups, all groups of a prompt on one side.

    :func:`hold_out`'s split (:func:`split_whole`) with ``group_by="prompt"``, counted in groups instead
    of pairs: the prompts, in order of first appearance, are shuffled with ``random.Random(seed)`` and
    taken whole until at least ``eval_size`` groups are held out.

    Returns:
        (training groups, held-out groups, summary), both lists in source order.

    Raises:
        PreftuneError: ``eval_size`` below 0, or one that leaves no training groups.
    """
    auto, eval_size = eval_size is None, resolve_eval_size(eval_size, len(groups))
    _check_eval_size(eval_size, len(groups), "groups")
    split = split_whole(groups, eval_size, prompt_key, seed)
    if split.held_out and not split.train:
        raise PreftuneError(
            f"data.eval_size {eval_size} leaves no training groups: the {len(groups)} groups have only "
            f"{len(split.groups)} prompts and each prompt's groups are held out together; lower data.eval_size"
        )
    summary = GroupSplitSummary(
        seed=seed,
        eval_size=eval_size,
        groups=len(groups),
        duplicate_groups=len(groups) - len({group_key(g) for g in groups}),
        prompts=len(split.groups),
        shared_prompts=split.shared_groups,
        largest_prompt=split.largest_group,
        held_out=len(split.held_out),
        held_out_prompts=split.held_out_groups,
        train=len(split.train),
        auto=auto,
    )
    return split.train, split.held_out, summary
