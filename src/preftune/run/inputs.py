"""A run's data, in two steps: rows -> validated, split examples (no tokenizer, no model), then
examples -> token pairs (or groups).

Four kinds of data (:func:`data_kind`): preference pairs; unpaired good and bad examples
(``data.bad``, P1's setting: each good example drawn with a bad one at random, for the likelihood
terms); groups of C ranked completions with rewards (scores, or minus the ranks) for the
sampled-group terms trained offline (P3); and, for a pairwise objective with ``data.pairing=all``,
``pairs_within``: ranked data read as groups (any sizes, padded to the largest with
:func:`~preftune.data.groups.pad_groups`) whose pairs the objective reads in place
(:class:`~preftune.objectives.WithinGroups`, :func:`objective_for_inputs`), so each completion is
forwarded once instead of once per pair it sits in (issue 22); pair data of that kind load as pairs.
Held-out data are always pairs: a held-out group is scored by its best against its worst
completion, or with ``pairs_within`` by every pair the training pairs it into.

The first step runs before anything is loaded or converted, so a missing file, a wrong column
or a bad row costs the user nothing. The held-out pairs are whole groups of pairs (by default
all pairs sharing a prompt), so no prompt is both trained on and held out; they are saved with
the run (``heldout.jsonl``) so that ``preftune evaluate run=DIR`` scores exactly them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from preftune.data import (
    DataSummary,
    PreferenceExample,
    TokenizedGroup,
    load_preference_data,
    load_unpaired,
    tokenize_examples,
)
from preftune.data.columns import apply_columns
from preftune.data.formats import detect_format
from preftune.data.grouped import GROUP_FORMATS, fit_group_size, load_groups
from preftune.data.groups import GroupExample, pad_groups
from preftune.data.options import check_prompt_room, data_options, resolve_source
from preftune.data.rows import RawRows
from preftune.data.sources import load_rows
from preftune.data.split import hold_out, hold_out_groups
from preftune.data.tokenize import end_of_turn_ids, tokenize_groups
from preftune.errors import PreftuneError
from preftune.files import write_atomic
from preftune.objectives import GroupRecord, Objective, PairRecord, WithinGroups, build
from preftune.run.config import DataConfig, RunConfig
from preftune.run_layout import HELD_OUT_FILE as HELD_OUT_FILE  # re-exported: run.py imports it from here

KINDS = ("pairs", "unpaired", "groups", "pairs_within")


@dataclass
class Examples:
    """Validated examples of a run, split into training and held-out, with their summaries."""

    train: list[PreferenceExample] | list[GroupExample]
    held_out: list[PreferenceExample]
    summaries: dict[str, DataSummary | None]


@dataclass
class Inputs:
    """Token pairs (groups of two) or groups of a run: what the trainer reads."""

    train: list[TokenizedGroup]
    held_out: list[TokenizedGroup]
    held_out_examples: list[PreferenceExample]
    summaries: dict[str, DataSummary | None]


def data_kind(config: RunConfig, objectives: Sequence[Objective] | None = None) -> str:
    """``groups`` when the run's objectives (default: built from ``config``) read sampled groups,
    ``unpaired`` with ``data.bad``, ``pairs_within`` for pairwise objectives with ``data.pairing=all``
    (ranked data read as groups; none of the objectives pairs a batch's mismatched examples), else ``pairs``."""
    if config.online.rounds:  # prompts (and offline pairs to mix in) come from pairs
        return "pairs"
    if objectives is None:
        objectives = [build(stage.objective) for stage in config.resolved_stages()]
    if any(objective.record_type is GroupRecord for objective in objectives):
        return "groups"
    if config.data.bad:
        return "unpaired"
    if config.data.pairing == "all" and not any(objective.needs_mismatched for objective in objectives):
        return "pairs_within"
    return "pairs"


def load_examples(d: DataConfig, kind: str = "pairs") -> Examples:
    """Read and validate every row, then hold out ``data.eval_size`` examples (or read ``data.eval``)."""
    if kind == "groups":
        return _load_groups(d)
    if kind == "pairs_within":
        ranked, rows = _ranked_train(d)
        if ranked:
            return _load_groups(d, within=True, rows=rows)
    options = data_options(d)
    if kind == "unpaired":
        good, bad = resolve_source(d.train), resolve_source(str(d.bad))
        examples, summary = load_unpaired(
            good, bad, columns=d.columns or None, skip_invalid=d.skip_invalid, split=d.split
        )
    else:
        examples, summary = load_preference_data(resolve_source(d.train), **options)
    if d.eval:
        # data.split picks a split of data.train; a separate held-out source is read whole (its train split)
        held_out, held_summary = load_preference_data(resolve_source(d.eval), **{**options, "split": None})
        return Examples(examples, held_out, {"train": summary, "eval": held_summary})
    train, held_out, split = hold_out(examples, d.eval_size, group_by=d.split_by)
    summary = summary.with_split(split)
    held_summary = replace(summary, kept=len(held_out)) if held_out else None
    return Examples(train, held_out, {"train": summary, "eval": held_summary})


def _ranked_train(d: DataConfig) -> tuple[bool, RawRows | None]:
    """Whether ``data.train`` holds ranked completions (``data.format`` ranked or oasst, or detected so),
    with its rows where detecting them read them (columns applied), so that they are not read twice."""
    if d.format in GROUP_FORMATS:
        return True, None
    if d.format != "auto":
        return False, None
    raw = apply_columns(load_rows(resolve_source(d.train), d.split, skip_invalid=d.skip_invalid), d.columns or None)
    try:
        return detect_format(raw) in GROUP_FORMATS, raw
    except PreftuneError:  # neither: the pair loader says what is wrong, in its words
        return False, None


def _load_groups(d: DataConfig, within: bool = False, rows: RawRows | None = None) -> Examples:
    """Ranked groups of ``data.group_size`` completions; the held-out groups as best-vs-worst pairs.

    ``within``: groups of any size for a pairwise objective reading every pair in them (``data.pairing=all``),
    those without a pair more than ``data.score_gap`` apart dropped, the held-out groups as all such pairs.
    ``rows``: data.train's rows, where they were read already."""
    options = {"format": d.format, "columns": d.columns or None, "skip_invalid": d.skip_invalid}
    groups, summary = load_groups(resolve_source(d.train), split=d.split, rows=rows, **options)
    if within:
        groups, dropped, reason = _with_pairs(groups, d.score_gap)
    else:
        groups, dropped = fit_group_size(groups, d.group_size)
        reason = f"fewer than data.group_size={d.group_size} ranked completions"
    if dropped:
        summary = replace(summary, kept=len(groups), dropped={**summary.dropped, reason: dropped})
    if d.eval and within:  # held out as pairs, as data.eval is read for any pairwise run
        held_out, held_summary = load_preference_data(resolve_source(d.eval), **{**data_options(d), "split": None})
        return Examples(groups, held_out, {"train": summary, "eval": held_summary})
    if d.eval:
        held_groups, held_summary = load_groups(resolve_source(d.eval), **options)
        train = groups
    else:
        train, held_groups, split = hold_out_groups(groups, d.eval_size)
        summary = summary.with_split(split)
        held_summary = replace(summary, kept=len(held_groups)) if held_groups else None
    pairing = ("all", d.score_gap) if within else ("best_vs_worst", 0.0)
    held_out = [pair for g in held_groups for pair in g.pairs(*pairing)]
    if within and held_summary is not None:
        held_summary = replace(held_summary, kept=len(held_out), unit="pairs")
    return Examples(train, held_out, {"train": summary, "eval": held_summary})


def _with_pairs(groups: list[GroupExample], gap: float) -> tuple[list[GroupExample], int, str]:
    """The groups holding a pair of completions more than ``gap`` apart, how many did not, and why."""
    kept = [g for g in groups if g.pairs("all", gap)]
    return kept, len(groups) - len(kept), f"no two completions more than data.score_gap={gap} apart"


def objective_for_inputs(objective: Objective, train: Sequence[TokenizedGroup], d: DataConfig) -> Objective:
    """What a stage trains on ``train``: a pairwise ``objective`` reads ranked groups (the ``pairs_within``
    kind: items with rewards) through :class:`~preftune.objectives.WithinGroups`, every pair more than
    ``data.score_gap`` apart formed in place; any other, as it is."""
    ranked = bool(train) and train[0].rewards is not None
    if ranked and objective.record_type is PairRecord:
        return WithinGroups(objective, d.score_gap)  # type: ignore[return-value]
    return objective


def tokenize_inputs(examples: Examples, tokenizer: Any, d: DataConfig) -> Inputs:
    """Tokenise both splits with the model's chat template; cut to ``data.max_length`` and ``train_size``."""
    # Without a prompt budget, a long prompt would leave no room and its pair would be dropped:
    # by default the prompt keeps at most half of max_length (cut from the left).
    max_prompt = d.max_prompt_length if d.max_prompt_length is not None else d.max_length // 2
    summaries = examples.summaries
    groups = bool(examples.train) and isinstance(examples.train[0], GroupExample)
    tokenize = tokenize_groups if groups else tokenize_examples
    train, train_summary = tokenize(
        examples.train,
        tokenizer,
        d.max_length,
        max_prompt,  # type: ignore[arg-type]
        summary=summaries["train"],
    )
    check_prompt_room(examples.train, tokenizer, d.max_length, train_summary)
    if d.train_size is not None and d.train_size < len(train):
        train = train[: d.train_size]
        train_summary = replace(train_summary, kept=len(train)) if groups else train_summary.limited(train)
    if groups:  # ragged groups (pairs_within) padded to one size: a batch is [B, C]
        train = pad_groups(train, min(end_of_turn_ids(tokenizer)))
    held: list[TokenizedGroup] = []
    held_summary: DataSummary | None = None
    if examples.held_out:
        held, held_summary = tokenize_examples(
            examples.held_out, tokenizer, d.max_length, max_prompt, summary=summaries["eval"]
        )
    kept = {id(p.origin) for p in held}
    held_examples = [e for e in examples.held_out if id(e.origin) in kept] if held else []
    return Inputs(train, held, held_examples, {"train": train_summary, "eval": held_summary})


def example_row(example: PreferenceExample) -> dict[str, Any]:
    """One example as a row of TRL's standard or conversational format (what the loaders read back)."""
    return {"prompt": example.prompt, "chosen": example.chosen, "rejected": example.rejected}


def save_held_out(examples: Sequence[PreferenceExample], path: Path) -> None:
    """The held-out pairs as JSON Lines, written atomically (``preftune evaluate run=DIR`` reads them)."""
    write_atomic(path, "".join(json.dumps(example_row(e), ensure_ascii=False) + "\n" for e in examples))
