"""Groups of ranked completions: C completions per prompt with scalar rewards, for group objectives.

The on-policy objectives (``reinforce``, ``rwr``, ``bon``, ``bon_neg``; docs/methods.md §2) read C
responses per prompt with a reward each. Trained offline (P3's offline half), they read them from
the same ranked data that :mod:`preftune.data.ranked` turns into pairs:

- rows with ``prompt``, ``completions`` and ``scores`` (reward = score) or ``ranks`` (0 = best;
  reward = −rank); a ``null`` leaves that completion out of the group;
- OpenAssistant message trees: every user turn with assistant replies gives a group (reward =
  −rank; deleted and unranked replies left out), its prompt the conversation down to that turn
  (``tree_turns="first"``: only the replies to the root).

A group needs at least two ranked completions: smaller ones are dropped and counted in the
summary (as ties are for pairs). Every row is validated first, as by
:func:`~preftune.data.load_preference_data`: a bad row is named by file, row and field, or with
``skip_invalid`` dropped and counted by reason.

Then :func:`fit_group_size` gives every group the same C (a batch is ``[B, C]``),
:func:`~preftune.data.split.hold_out_groups` holds out whole prompts, and
:func:`~preftune.data.tokenize.tokenize_groups` turns them into
:class:`~preftune.data.groups.TokenizedGroup`\\ s by the path that tokenises pairs.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from preftune.data.columns import EXPECTED, apply_columns, closest
from preftune.data.examples import Origin
from preftune.data.formats import FORMATS, detect_format, resolve_format
from preftune.data.groups import GroupExample
from preftune.data.load import no_valid_rows
from preftune.data.ranked import TREE_TURNS, RankedGroup, read_ranked, read_tree
from preftune.data.rows import RawRows
from preftune.data.sources import load_rows
from preftune.data.summary import DataSummary, sizes_note
from preftune.data.validation import RowProblem, Tally, check_part, validate_rows
from preftune.errors import PreftuneError

__all__ = ["NO_GROUP", "GroupExample", "fit_group_size", "load_groups"]

NO_GROUP = "no group (fewer than two ranked completions)"
GROUP_FORMATS = ("ranked", "oasst")
NEED_RANKED = (
    "group objectives need ranked completions ('completions' with 'scores' or 'ranks', or OpenAssistant message trees)"
)


@dataclass(frozen=True)
class _Candidate:
    """A group read from a row, before its size is checked, with each completion's field for errors."""

    group: GroupExample
    fields: tuple[str, ...]


def _group_format(raw: RawRows, format: str) -> str:
    """``ranked`` or ``oasst`` (detected for ``"auto"``); one line saying why anything else cannot give groups."""
    if format not in FORMATS:
        resolve_format(raw, format)  # raises the usual "unknown data format" line
    detected: str | None = format
    if format == "auto":
        try:
            detected = detect_format(raw)
        except PreftuneError:  # neither groups nor pairs: say what groups need, not what pairs need
            detected = None
    if detected in GROUP_FORMATS:
        return resolve_format(raw, detected)  # refuses ranked rows with neither 'ranks' nor 'scores'
    if detected is not None:
        raise PreftuneError(f"{raw.name}: {NEED_RANKED}; this is {detected} pair data")
    guess = closest("completions", [c for c in raw.columns if c not in EXPECTED])
    hint = (
        f"; did you mean '{guess}'? (set data.columns.completions={guess})"
        if guess
        else " (data.columns.completions, .scores, .ranks map other names)"
    )
    raise PreftuneError(f"{raw.name}: {NEED_RANKED}; found columns {raw.columns}{hint}")


def _candidate(ranked: RankedGroup, origin: Origin) -> _Candidate:
    """The ranked completions of ``ranked`` as a group; unranked ones left out, ranks turned into −rank."""
    kept = [i for i, v in enumerate(ranked.values) if v is not None]
    rewards: list[float] = []
    for i in kept:
        value = ranked.values[i]
        assert value is not None
        if not math.isfinite(value):  # a NaN or infinite reward would poison every baseline of the batch
            key = "ranks" if ranked.lower_is_better else "scores"
            field = f"{ranked.fields[i]}.rank" if ranked.node else f"{key}[{i}]"
            raise RowProblem(field, "expected a finite number", f"got {value}")
        rewards.append(0.0 - value if ranked.lower_is_better else value)  # 0.0 - 0 is 0.0, not -0.0
    part = f"turn {ranked.turn}, replies to {ranked.node}" if ranked.node else ""
    completions = tuple(ranked.completions[i] for i in kept)
    group = GroupExample(ranked.prompt, completions, tuple(rewards), Origin(origin.source, origin.row, part))
    return _Candidate(group, tuple(ranked.fields[i] for i in kept))


def _parse_row(row: dict[str, Any], origin: Origin, *, tree: bool, tree_turns: str) -> list[_Candidate]:
    ranked = read_tree(row, tree_turns=tree_turns) if tree else [read_ranked(row)]
    return [_candidate(r, origin) for r in ranked]


def _check_candidate(candidate: _Candidate) -> None:
    """The checks of :func:`~preftune.data.validation.check_example`, for a prompt and each ranked completion."""
    group = candidate.group
    conversational = group.is_conversational
    check_part(group.prompt, "prompt", conversational, response=False)
    for completion, field in zip(group.completions, candidate.fields, strict=True):
        check_part(completion, field, conversational, response=True)


def load_groups(
    source: str | Path,
    *,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    split: str | None = None,
    skip_invalid: bool = False,
    tree_turns: str = "all",
    rows: RawRows | None = None,
) -> tuple[list[GroupExample], DataSummary]:
    """Read groups of ranked completions, validating every row before anything else happens.

    Args:
        source: a file, a folder or a Hub name, as for :func:`~preftune.data.load_preference_data`.
        format: ``"auto"``, ``"ranked"`` or ``"oasst"``; pair formats are refused in one line.
        columns: maps expected column names to the file's, e.g. ``{"completions": "responses"}``.
        split: the split of a folder or Hub dataset.
        skip_invalid: drop bad rows and count them by reason instead of raising on the first.
        tree_turns: for message trees, ``"all"`` ranked turns or only the ``"first"``.
        rows: ``source``'s rows, already read with ``columns`` applied (then not read again).

    Returns:
        The groups, in source order, and a :class:`DataSummary` whose ``kept`` counts groups;
        groups with fewer than two ranked completions are counted under :data:`NO_GROUP`.

    Raises:
        PreftuneError: one line naming the file, row and field of the first bad row (unless
            ``skip_invalid``), or why the source cannot give groups.
    """
    if tree_turns not in TREE_TURNS:
        raise PreftuneError(f"unknown tree_turns '{tree_turns}' (expected one of {', '.join(TREE_TURNS)})")
    raw = rows if rows is not None else apply_columns(load_rows(source, split, skip_invalid=skip_invalid), columns)
    chosen_format = _group_format(raw, format)
    parse = partial(_parse_row, tree=chosen_format == "oasst", tree_turns=tree_turns)
    tally = Tally()
    candidates = validate_rows(
        raw,
        parse,
        _check_candidate,
        skip_invalid=skip_invalid,
        tally=tally,
        origin_of=lambda candidate: candidate.group.origin,
        no_item_reason=NO_GROUP,  # a tree without a single replied-to user turn
    )
    groups: list[GroupExample] = []
    for candidate in candidates:
        if len(candidate.group.completions) < 2:
            tally.add(NO_GROUP)
        else:
            groups.append(candidate.group)
    if not groups:
        raise no_valid_rows(raw.name, tally)
    notes = (sizes_note("loaded", [len(g.completions) for g in groups]),)
    kept, dropped = len(groups), tally.as_dict()
    return groups, DataSummary(raw.name, chosen_format, raw.rows_read, kept, dropped, notes=notes, unit="groups")


def fit_group_size(groups: Sequence[GroupExample], size: int | None, seed: int = 0) -> tuple[list[GroupExample], int]:
    """Give every group the same number of completions, C (a batch of groups is ``[B, C]``).

    Args:
        groups: the loaded groups.
        size: None: every group must already have one size. C: groups with fewer than C
            completions are dropped; larger ones keep C completions chosen at random, in their
            original order.
        seed: with the group's origin, seeds the choice, so that it does not depend on the
            groups' order or on which other groups there are.

    Returns:
        (the groups, how many were dropped for having fewer than C completions).

    Raises:
        PreftuneError: sizes differ and ``size`` is None (the sizes found, and ``data.group_size``);
            ``size`` below 2; no group left.
    """
    if not groups:
        raise PreftuneError("no groups to fit to a group size")
    if size is None:
        sizes = Counter(len(g.completions) for g in groups)
        if len(sizes) > 1:
            listed = [f"{n} of {c}" for c, n in sorted(sizes.items())]
            found = ", ".join([listed[0].replace(" of ", " groups of ", 1), *listed[1:]])
            raise PreftuneError(
                f"the groups have different numbers of completions ({found}) but a batch needs one: set "
                "data.group_size=C (groups with fewer are dropped, larger ones keep C completions chosen at random)"
            )
        return list(groups), 0
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise PreftuneError(f"data.group_size must be a whole number of at least 2, not {size!r}")
    kept: list[GroupExample] = []
    for group in groups:
        n = len(group.completions)
        if n > size:
            origin = group.origin
            # A string seed is hashed with SHA-512: the same choice in every process, whatever PYTHONHASHSEED.
            rng = random.Random(f"{seed}|{origin.source}|{origin.row}|{origin.part}")
            chosen = sorted(rng.sample(range(n), size))
            completions = tuple(group.completions[i] for i in chosen)
            group = replace(group, completions=completions, rewards=tuple(group.rewards[i] for i in chosen))
        if n >= size:
            kept.append(group)
    if not kept:
        largest = max(len(g.completions) for g in groups)
        raise PreftuneError(f"data.group_size={size} drops every group (the largest has {largest} completions)")
    return kept, len(groups) - len(kept)
