"""P3's Lemma 6.2 on real batches: the gradient cosine over training for a ``dpo`` and an ``mle`` run.

Two short runs of :func:`preftune.run.train.run_training` on the same data, model and seed, one
with ``objective=dpo`` (a negative gradient on y_l) and one with ``objective=mle`` (none), each with
``eval.gradient_cosine_every``: the trainer measures cos(∇θ log π(y_w), ∇θ log π(y_l)) on the same
held-out pairs before the first step, every few steps and at the end
(:mod:`preftune.training.gradient_cosine_hook`). The runs go to a temporary folder; only their
records are kept.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from preftune.data.config import DataConfig
from preftune.reproduce.report import ClaimSection, markdown_table
from preftune.reproduce.verdicts import Interval, wilson
from preftune.run.config import EvalConfig, LoraSettings, ModelConfig, OptimConfig, RunConfig, resolve_defaults
from preftune.run.train import run_training

OBJECTIVES = ("dpo", "mle")

LEMMA_TEXT = (
    "Lemma 6.2 concerns one gradient step of an objective that pushes the rejected response's "
    "log-likelihood down. To first order, that step changes log π(y_w) by a multiple of −⟨∇θ log π(y_w), "
    "∇θ log π(y_l)⟩: when the two gradients point away from each other (cosine ≤ 0), pushing y_l down "
    "also pushes y_w up, so a negative gradient helps the preferred response; when they are aligned "
    "(cosine > 0, as for similar responses), it drags y_w down too."
)


def training_config(settings: Mapping[str, Any], objective: str, output_dir: Path) -> RunConfig:
    """A run of ``objective`` from ``settings`` (sections ``model``, ``lora``, ``data``, ``optim``, ``eval``),
    no trackers, no intermediate checkpoints."""
    config = RunConfig(
        model=ModelConfig(**settings.get("model", {})),
        lora=LoraSettings(**settings.get("lora", {})),
        data=DataConfig(**settings.get("data", {})),
        optim=OptimConfig(**settings.get("optim", {})),
        eval=EvalConfig(**settings.get("eval", {})),
        objective=objective,
        output_dir=str(output_dir),
        save_every=10**9,
        keep_checkpoints=1,
        trackers=[],
    )
    return resolve_defaults(config)


def run_lemma_study(settings: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``objective -> {"gradient_cosines": [records], "eval_before": ..., "eval_after": ..., "seconds": ...}``."""
    out: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="preftune-p3-lemma-") as tmp:
        for objective in OBJECTIVES:
            outcome = run_training(training_config(settings, objective, Path(tmp) / objective))
            stage = outcome["stages"][0]
            out[objective] = {
                "gradient_cosines": stage.get("gradient_cosines", []),
                "eval_before": stage.get("eval_before"),
                "eval_after": stage.get("eval_after"),
                "seconds": outcome.get("seconds"),
            }
    return out


def _mean_se(record: Mapping[str, Any]) -> str:
    stderr = record.get("stderr")
    return f"{record['mean']:+.3f} ± {stderr:.3f}" if stderr is not None else f"{record['mean']:+.3f}"


def _fraction(records: list[Mapping[str, Any]]) -> Interval:
    """The fraction of cosines ≤ 0 over every measurement of a run, with its Wilson interval."""
    return wilson(sum(int(r["nonpositive"]) for r in records), sum(int(r["count"]) for r in records))


def _chosen_drift(run: Mapping[str, Any]) -> str:
    """The change of the held-out mean log π(y_w) over the run, if the evaluations have it."""
    before, after = run.get("eval_before") or {}, run.get("eval_after") or {}
    key = "logps/chosen"
    if key in before and key in after:
        return f"{after[key]['mean'] - before[key]['mean']:+.2f}"
    return "–"


def lemma_section(
    runs: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any], figures: tuple[str, ...]
) -> ClaimSection:
    """The lemma's section: per run, the cosine at the first and last measurement and how often it is ≤ 0."""
    rows, data = [], {}
    for objective, run in runs.items():
        records = list(run["gradient_cosines"])
        if not records:
            continue
        first, last, share = records[0], records[-1], _fraction(records)
        rows.append(
            (
                objective,
                f"{first['step']}: {_mean_se(first)}",
                f"{last['step']}: {_mean_se(last)}",
                f"{last['nonpositive']}/{last['count']}",
                f"{share.text(2)} of {sum(r['count'] for r in records)}",
                _chosen_drift(run),
            )
        )
        data[objective] = {"records": records, "nonpositive_fraction": share.to_dict()}
    header = [
        "objective",
        "first: step: mean ± s.e.",
        "last: step: mean ± s.e.",
        "last: pairs ≤ 0",
        "all measurements: fraction ≤ 0 [95% Wilson CI] of pairs",
        "held-out change of mean log π(y_w)",
    ]
    setup = _setup(settings)
    measured = "\n\n".join([setup, markdown_table(header, rows)]) if rows else setup + "\n\nNo cosine was recorded."
    return ClaimSection(
        "lemma_6_2",
        "Lemma 6.2: the gradient cosine between y_w and y_l during training",
        LEMMA_TEXT,
        measured,
        None,
        _reading(data),
        figures,
        {"runs": data},
    )


def _setup(settings: Mapping[str, Any]) -> str:
    """The runs' settings in one paragraph."""
    model, lora, data = settings.get("model", {}), settings.get("lora", {}), settings.get("data", {})
    optim, evaluation = settings.get("optim", {}), settings.get("eval", {})
    adapter = f"LoRA rank {lora.get('rank', 16)}" if lora.get("enabled", True) else "full fine-tuning"
    if lora.get("enabled", True) and lora.get("last_layers"):
        adapter += f" on the last {lora['last_layers']} layers"
    return (
        f"Model `{model.get('name', 'smollm2-135m-instruct')}` with {adapter}, data `{data.get('train')}` "
        f"({data.get('train_size') or 'all the'} training pairs, max length {data.get('max_length')}), "
        f"{optim.get('max_steps')} steps of {optim.get('batch_size')} pairs at lr {optim.get('lr')}, seed "
        f"{optim.get('seed', 0)}, the same for both objectives. The cosine is over the trainable parameters, on the "
        f"first {evaluation.get('gradient_cosine_pairs')} held-out pairs, every "
        f"{evaluation.get('gradient_cosine_every')} steps (mean ± standard error over the pairs)."
    )


def _reading(data: Mapping[str, Any]) -> str:
    """What the fractions say about the lemma's condition, per objective, computed from the records."""
    parts = []
    for objective, entry in data.items():
        share, records = entry["nonpositive_fraction"], entry["records"]
        if share["estimate"] is None:
            continue
        count = sum(int(r["count"]) for r in records)
        nonpositive = sum(int(r["nonpositive"]) for r in records)
        interval = f"{share['estimate']:.0%} [{share['low']:.0%}, {share['high']:.0%}]"
        first, last = records[0], records[-1]
        parts.append(
            f"under {objective}, cos ≤ 0 for {nonpositive} of {count} measured pairs ({interval}), mean cosine "
            f"{first['mean']:+.3f} at step {first['step']} and {last['mean']:+.3f} at step {last['step']}"
        )
    if not parts:
        return "No cosine was recorded."
    shares = [entry["nonpositive_fraction"]["estimate"] for entry in data.values()]
    most = all(x is not None and x > 0.5 for x in shares)
    consequence = (
        "so for most pairs here, pushing y_l down also pushes y_w up (to first order)"
        if most
        else "so for most pairs here the condition fails: to first order, pushing y_l down also pulls y_w down"
    )
    return "Measured: " + "; ".join(parts) + f"; {consequence}."
