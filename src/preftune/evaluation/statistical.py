"""Statistical evaluation: aggregate per-pair metrics into means with standard errors.

The per-pair values come from :func:`preftune.objectives.pair_metrics` (docs/methods.md §6):
preference accuracy (h > 0, ties half), likelihood accuracy (A_w > A_l), margin h, chosen
drift A_w - A_ref,w. Perplexity of the chosen responses is exp of the token-weighted mean NLL.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from preftune.data.batch import Batch
from preftune.objectives import PairRecord, SequenceLogProbs, pair_metrics
from preftune.progress import QUIET_S, StepProgress


@dataclass(frozen=True)
class MetricSummary:
    """Mean, standard error of the mean, and count of one metric over held-out pairs."""

    mean: float
    stderr: float
    count: int

    def __str__(self) -> str:
        return f"{self.mean:.4f} ± {self.stderr:.4f}"

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "stderr": self.stderr, "count": self.count}


def mean_and_stderr(values: Tensor) -> MetricSummary:
    """Mean of ``[n]`` values with its standard error s/√n (sample standard deviation)."""
    values = values.double().flatten()
    n = int(values.numel())
    if n == 0:
        return MetricSummary(math.nan, math.nan, 0)
    stderr = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.nan
    return MetricSummary(float(values.mean()), stderr, n)


def summarise(per_pair: Mapping[str, Sequence[Tensor] | Tensor]) -> dict[str, MetricSummary]:
    """Aggregate per-pair metric tensors (lists of ``[B]`` batches or one ``[n]``) by name.

    Adds ``chosen_perplexity`` when ``logps/chosen`` and ``count/chosen`` are present.
    """
    flat = {k: v if isinstance(v, Tensor) else torch.cat([t.flatten() for t in v]) for k, v in per_pair.items()}
    out = {k: mean_and_stderr(v) for k, v in flat.items() if not k.startswith("count/")}
    if "logps/chosen" in flat and "count/chosen" in flat:
        counts = flat["count/chosen"].double()
        nll = -(flat["logps/chosen"].double() * counts).sum() / counts.sum()
        out["chosen_perplexity"] = MetricSummary(float(torch.exp(nll)), math.nan, int(counts.numel()))
    return out


def pair_values(
    policy: Callable[[Batch], tuple[SequenceLogProbs, SequenceLogProbs | None]],
    reference: Callable[[Batch], tuple[SequenceLogProbs, SequenceLogProbs | None]] | None,
    pairs: Sequence[Any],
    indices: Tensor,
    batcher: Callable[[Sequence[Any], Tensor], Batch],
    batch_size: int,
    device: torch.device | str = "cpu",
    beta: float = 0.1,
    average: bool = False,
    progress: bool = False,
) -> dict[str, list[float]]:
    """Per-pair metric values of ``pairs[indices]``, in batches, without gradient.

    Passing the same callable as ``policy`` and ``reference`` scores a model against itself in
    one pass (h = 0: at the start of a stage the policy is its reference, so only the
    likelihood metrics carry information). ``progress``: a bar with ETA over the batches (stderr).
    """
    values: dict[str, list[float]] = {}
    blocks = indices.split(batch_size)
    bar = StepProgress(len(blocks), enabled=progress, description="evaluate", unit="batch", quiet_s=QUIET_S)
    with torch.no_grad(), bar:
        for block in blocks:
            if not len(block):
                bar.advance({})
                continue
            batch = batcher([pairs[i] for i in block.tolist()], block).to(device)
            chosen, rejected = policy(batch)
            ref_chosen = ref_rejected = None
            if reference is not None:
                ref_chosen, ref_rejected = (chosen, rejected) if reference is policy else reference(batch)
            record = PairRecord(chosen, rejected, ref_chosen, ref_rejected)
            metrics = pair_metrics(record, beta=beta, average=average)
            metrics["count/chosen"] = chosen.count
            for name, value in metrics.items():
                values.setdefault(name, []).extend(value.float().cpu().tolist())
            bar.advance({})
    return values


def gain_verdict(name: str, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    """One line: the held-out change of ``name`` and whether it exceeds twice its standard error.

    ``before``/``after`` map metric names to ``{"mean", "stderr", "count"}``. The standard error of
    the gain is that of the after-value: before training the policy is its own reference, so
    accuracy is exactly 1/2 and the margin exactly 0, with no sampling error of their own.
    """
    if not before or not after or name not in before or name not in after:
        return None
    gain = after[name]["mean"] - before[name]["mean"]
    stderr = after[name]["stderr"]
    if not stderr or stderr != stderr:
        return f"{name}: {before[name]['mean']:.4f} -> {after[name]['mean']:.4f} (no standard error)"
    ratio = gain / stderr
    if ratio > 2:
        verdict = "significant (> 2 s.e.)"
    elif ratio < -2:
        verdict = "significant LOSS (< -2 s.e.)"
    else:
        verdict = "NOT significant (within 2 s.e.)"
    return (
        f"{name}: {before[name]['mean']:.4f} -> {after[name]['mean']:.4f} ± {stderr:.4f}, "
        f"gain {gain:+.4f} = {ratio:.1f} s.e.: {verdict}"
    )
