"""``data.*`` of a run's config: where the pairs come from and how they are cut to length.

Read by ``preftune train`` (a field of :class:`preftune.run.config.RunConfig`) and by
``preftune evaluate``, which reads data exactly as training does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from preftune.data.labelled import LabelSpec


@dataclass
class DataConfig:
    """Where the pairs come from and how they are cut to length."""

    train: str = "bundled:hh-harmless"
    eval: str | None = None  # a separate file, or None to hold out `eval_size` pairs of `train`
    eval_size: int | None = None  # None: a tenth of the pairs, at most 100 (data/split.py resolve_eval_size)
    split_by: str = "prompt"  # held-out pairs: whole groups of pairs sharing a prompt (or only identical pairs: pair)
    split: str | None = None  # the split of a dataset folder or hub dataset (default: train, or its only one)
    train_size: int | None = None  # use only the first N training pairs (after the hold-out)
    format: str = "auto"
    pairing: str = "best_vs_worst"  # ranked completions -> pairs: best_vs_worst | all
    score_gap: float = 0.0  # pairing=all: only pairs whose scores (or ranks) differ by more than this
    group_size: int | None = None  # group objectives: completions per prompt (None: every group must have one size)
    bad: str | None = None  # unpaired data: the bad examples (prompt, completion); `train` holds the good ones
    columns: dict[str, str] = field(default_factory=dict)
    labels: LabelSpec = field(default_factory=LabelSpec)  # two responses and a label: which value means which
    skip_invalid: bool = False
    max_length: int = 1024  # TRL's DPOConfig default
    max_prompt_length: int | None = None  # None: half of max_length (prompts are cut from the left)
    layout: str = "shared"  # shared: packed, one prompt per pair | packed: one prompt per response | padded
    group_by_length: bool = False  # batches of similar lengths (less padding in the padded layout)
