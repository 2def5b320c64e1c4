"""P1's training runs (Tuan & Wang 2024): every objective on the same pairs and seeds, measured alike.

Each variant trains with :func:`preftune.run.train.run_training` from the same start, data and seed:
``mle``, ``ul``, ``exmate``, ``dpo``, ``dpo+mle``, ``dpo+exmate`` (joint), and the staged reading of
DPO + ExMATE (an ``exmate`` stage, then ``dpo`` referenced on its result). The staged run's first stage is
the ``exmate`` run (same start, data, seed and steps), so when both are asked for, the ``exmate`` variant is read
from that stage instead of trained twice. Per run we keep:

- the held-out statistics (docs/methods.md §6) against the **starting** model: the trainer's own
  evaluation for one-stage runs (its reference is the start); :func:`preftune.evaluation.command.evaluate_model`
  with the start as reference for the staged run (whose second stage is referenced on the first);
- the greedy answers to the first held-out prompts;
- for a one-stage run, its held-out statistics at every evaluation of the trainer (before the first step,
  every ``eval.every`` steps, at the end: the stage record's ``evals``), the curve P4 (c) plots.

:func:`run_all` trains P1's variants, or any list of objective expressions (P4 (c): ``dpo``, ``dpo + bcr(...)``).
The run folders live in a temporary folder and are removed; only the numbers and answers are kept.
"""

from __future__ import annotations

import contextlib
import io
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from preftune.data.examples import PreferenceExample
from preftune.reproduce.answers import answers, distinct_prompts
from preftune.reproduce.p3_lemma import training_config
from preftune.run.config import RunConfig, StageConfig
from preftune.run_layout import HELD_OUT_FILE

if TYPE_CHECKING:
    from preftune.run.inputs import Examples

OBJECTIVES = ("mle", "ul", "exmate", "dpo", "dpo+mle", "dpo+exmate")
STAGED = "exmate→dpo"
VARIANTS = (*OBJECTIVES, STAGED)
METRICS = ("accuracy", "margin", "chosen_drift", "likelihood_accuracy", "logps/chosen")
Say = Callable[[str], Any]


@dataclass(frozen=True)
class Run:
    """One trained variant at one seed: its held-out statistics (means) and its answers; ``curve``: the
    statistics at each held-out evaluation of a one-stage run, ``{"step": ..., metric: mean}`` (empty for the
    staged run, whose second stage is evaluated against the first stage's result)."""

    variant: str
    seed: int
    metrics: dict[str, float]
    answers: list[str]
    seconds: float
    curve: list[dict[str, float]] = field(default_factory=list)


def variant_config(settings: Mapping[str, Any], variant: str, seed: int, output_dir: Path) -> RunConfig:
    """The run of ``variant`` (an objective, or :data:`STAGED`) at ``seed``, from the scale's settings."""
    config = training_config(settings, "dpo" if variant == STAGED else variant, output_dir)
    config.optim = replace(config.optim, seed=seed)
    if variant == STAGED:
        config.stages = [
            StageConfig(name="exmate", objective="exmate"),
            StageConfig(name="dpo", objective="dpo", reference="previous"),
        ]
    return config


def _means(record: Mapping[str, Any] | None) -> dict[str, float]:
    """``{metric: mean}`` of a held-out evaluation record."""
    return {k: float(v["mean"]) for k, v in (record or {}).items() if k in METRICS}


def _staged_metrics(model_dir: Path, start: str, heldout: Path, config: RunConfig) -> dict[str, float]:
    """The staged run's final model against the starting model on the run's held-out pairs."""
    from preftune.evaluation.command import evaluate_model

    with contextlib.redirect_stdout(io.StringIO()):
        metrics = evaluate_model(
            str(model_dir), start, str(heldout), data_config=config.data, batch_size=config.eval.batch_size
        )
    return {k: float(v.mean) for k, v in metrics.items() if k in METRICS}


def _one_stage_run(variant: str, seed: int, stage: Mapping[str, Any], text: list[str]) -> Run:
    """A one-stage run (or the first stage of the staged one) from its stage record: the trainer's held-out
    statistics against the start, its curve, and ``text``, its answers."""
    curve = [{"step": int(record["step"]), **_means(record)} for record in stage.get("evals", [])]
    return Run(variant, seed, _means(stage.get("eval_after")), text, float(stage["seconds"]), curve)


def train_variant(
    settings: Mapping[str, Any], variant: str, seed: int, folder: Path, prompts: Sequence[Any], max_new_tokens: int
) -> Run:
    """Train ``variant`` at ``seed`` in ``folder``; its held-out statistics and answers to ``prompts``."""
    return train_runs(settings, variant, seed, folder, prompts, max_new_tokens)[-1]


def train_runs(
    settings: Mapping[str, Any], variant: str, seed: int, folder: Path, prompts: Sequence[Any], max_new_tokens: int
) -> list[Run]:
    """Train ``variant`` at ``seed`` in ``folder``: ``[its Run]``, or for :data:`STAGED` ``[the exmate stage's
    Run, the staged Run]`` (the first stage is the ``exmate`` variant's run, answers included)."""
    from preftune.run.train import run_training

    config = variant_config(settings, variant, seed, folder)
    outcome = run_training(config)
    stages = outcome["stages"]
    if variant != STAGED:
        text = answers(stages[0]["model"], prompts, max_new_tokens)
        return [replace(_one_stage_run(variant, seed, stages[0], text), seconds=float(outcome["seconds"]))]
    first = _one_stage_run("exmate", seed, stages[0], answers(stages[0]["model"], prompts, max_new_tokens))
    metrics = _staged_metrics(Path(stages[-1]["model"]), config.model.name, folder / HELD_OUT_FILE, config)
    text = answers(stages[-1]["model"], prompts, max_new_tokens)
    return [first, Run(variant, seed, metrics, text, float(outcome["seconds"]))]


def read_pairs(settings: Mapping[str, Any]) -> Examples:
    """The training and held-out pairs under the scale's data settings, read as the trainer reads them (the
    held-out split does not depend on the seed; ``data.train_size`` is applied later, by the trainer)."""
    from preftune.run.inputs import load_examples

    config = training_config(settings, "dpo", Path(tempfile.gettempdir()) / "preftune-p1-unused")
    return load_examples(config.data, "pairs")


def held_out_prompts(settings: Mapping[str, Any], limit: int) -> tuple[list[Any], list[PreferenceExample]]:
    """(the first ``limit`` distinct held-out prompts, every pair the runs read) under the scale's data settings."""
    examples = read_pairs(settings)
    return distinct_prompts(examples.held_out, limit), [*examples.train, *examples.held_out]


def folder_name(variant: str, seed: int) -> str:
    """A run's folder name: the variant (an objective expression, or :data:`STAGED`) in safe characters."""
    safe = re.sub(r"[^A-Za-z0-9.=+-]+", "_", variant.replace("→", "-then-").replace(" ", ""))
    return f"{safe}-{seed}"


def run_all(
    settings: Mapping[str, Any],
    seeds: Sequence[int],
    prompts: Sequence[Any],
    max_new_tokens: int,
    say: Say,
    variants: Sequence[str] = VARIANTS,
    label: str = "P1",
) -> dict[str, list[Run]]:
    """Every variant (P1's by default) at every seed: ``variant -> [Run per seed]``; ``label`` opens each line
    said. ``exmate`` comes from the staged run's first stage when both are asked for."""
    from preftune.reproduce.workers import map_runs

    runs: dict[str, list[Run]] = {v: [] for v in variants}
    shared = "exmate" in variants and STAGED in variants
    trained = [v for v in variants if not (shared and v == "exmate")]
    with tempfile.TemporaryDirectory(prefix=f"preftune-{label.split()[0].lower()}-") as tmp:
        jobs = [
            (settings, variant, seed, Path(tmp) / folder_name(variant, seed), prompts, max_new_tokens)
            for seed in seeds
            for variant in trained
        ]

        def done(_: int, results: list[Run]) -> None:
            for run in results:
                if run.variant in runs:
                    accuracy = run.metrics.get("accuracy", 0)
                    say(f"{label}: {run.variant}, seed {run.seed}: {run.seconds:.0f} s, accuracy {accuracy:.3f}")

        for results in map_runs(train_runs, jobs, done):  # in the jobs' order: seed by seed, variant by variant
            for run in results:
                if run.variant in runs:
                    runs[run.variant].append(run)
    return runs
