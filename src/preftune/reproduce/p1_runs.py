"""P1's training runs (Tuan & Wang 2024): every objective on the same pairs and seeds, measured alike.

Each variant trains with :func:`preftune.run.train.run_training` from the same start, data and seed:
``mle``, ``ul``, ``exmate``, ``dpo``, ``dpo+mle``, ``dpo+exmate`` (joint), and the staged reading of
DPO + ExMATE (an ``exmate`` stage, then ``dpo`` referenced on its result). Per run we keep:

- the held-out statistics (docs/methods.md §6) against the **starting** model: the trainer's own
  evaluation for one-stage runs (its reference is the start); :func:`preftune.evaluation.command.evaluate_model`
  with the start as reference for the staged run (whose second stage is referenced on the first);
- the greedy answers to the first held-out prompts.

The run folders live in a temporary folder and are removed; only the numbers and answers are kept.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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
    """One trained variant at one seed: its held-out statistics (means) and its answers."""

    variant: str
    seed: int
    metrics: dict[str, float]
    answers: list[str]
    seconds: float


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


def train_variant(
    settings: Mapping[str, Any], variant: str, seed: int, folder: Path, prompts: Sequence[Any], max_new_tokens: int
) -> Run:
    """Train ``variant`` at ``seed`` in ``folder``; its held-out statistics and answers to ``prompts``."""
    from preftune.run.train import run_training

    config = variant_config(settings, variant, seed, folder)
    outcome = run_training(config)
    last = Path(config.output_dir) / ("dpo" if variant == STAGED else "")
    model_dir = last / "model"
    if variant == STAGED:
        metrics = _staged_metrics(model_dir, config.model.name, folder / HELD_OUT_FILE, config)
    else:
        metrics = _means(outcome["stages"][0].get("eval_after"))
    return Run(variant, seed, metrics, answers(str(model_dir), prompts, max_new_tokens), float(outcome["seconds"]))


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


def run_all(
    settings: Mapping[str, Any], seeds: Sequence[int], prompts: Sequence[Any], max_new_tokens: int, say: Say
) -> dict[str, list[Run]]:
    """Every variant at every seed: ``variant -> [Run per seed]``."""
    runs: dict[str, list[Run]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="preftune-p1-") as tmp:
        for seed in seeds:
            for variant in VARIANTS:
                folder = Path(tmp) / f"{variant.replace('→', '-then-')}-{seed}"
                run = train_variant(settings, variant, seed, folder, prompts, max_new_tokens)
                say(f"P1: {variant}, seed {seed}: {run.seconds:.0f} s, accuracy {run.metrics.get('accuracy', 0):.3f}")
                runs[variant].append(run)
    return runs
