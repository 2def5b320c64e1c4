"""The layout of a ``preftune train`` output folder: the names both training and evaluation read.

A leaf like :mod:`preftune.errors`: anything may import it; it imports nothing of preftune.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

CONFIG_FILE = "run_config.json"  # the run's resolved config, written before its first step
INPUTS_FILE = "run_inputs.json"  # fingerprints of the tokenised training and held-out pairs
HELD_OUT_FILE = "heldout.jsonl"  # the held-out pairs, as rows the loaders read back
DONE_FILE = "stage_done.json"  # in a stage's folder once the stage has finished: what it saved


def stage_dirs(output_dir: Path, stage_names: Sequence[str]) -> list[Path]:
    """Each stage's folder: the output folder itself for a single stage, a subfolder otherwise."""
    return [output_dir / name if len(stage_names) > 1 else output_dir for name in stage_names]
