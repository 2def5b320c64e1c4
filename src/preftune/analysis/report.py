"""The gradient report of P1 (Tuan & Wang 2024) for a list of objectives: PNGs, CSVs and a JSON.

:func:`write_gradient_report` parses every objective first (a bad one fails with
:class:`~preftune.errors.SpecError` before anything is written), computes the four analyses of
docs/methods.md §3 by autograd on synthetic pairs, and writes each file atomically
(:func:`preftune.files.write_atomic`), so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from preftune.analysis.curves import literal_similarity, weight_vs_margin, weight_vs_probability
from preftune.analysis.logit_space import SMOLLM2_VOCAB, logit_space
from preftune.analysis.summary import headline
from preftune.analysis.table import Analysis
from preftune.errors import SpecError
from preftune.files import write_atomic
from preftune.objectives import Objective, PairRecord, build

JSON_NAME = "gradient_analysis.json"
PAPER = "Tuan & Wang 2024, A Gradient Analysis Framework for Rewarding Good and Penalizing Bad Examples in LMs"


@dataclass(frozen=True)
class GradientReport:
    """What :func:`write_gradient_report` wrote (``files``) and what it found (``headline``)."""

    files: list[Path]
    headline: list[str]


def parse_specs(specs: Sequence[str]) -> dict[str, Objective]:
    """``{spec: Objective}`` for every spec (stripped, duplicates dropped); SpecError on any bad one."""
    if isinstance(specs, str):
        specs = [specs]
    objectives: dict[str, Objective] = {}
    for spec in specs:
        objective = build(spec)
        label = spec.strip() if isinstance(spec, str) else str(objective)
        if objective.record_type is not PairRecord:
            raise SpecError(f"the gradient report covers pairwise objectives; '{label}' reads sampled groups")
        objectives[label] = objective
    if not objectives:
        raise SpecError("the gradient report needs at least one objective, e.g. ['mle', 'dpo']")
    return objectives


def _csv(analysis: Analysis) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["objective", "x", "series", "value"])
    writer.writerows([r.objective, repr(r.x), r.series, repr(r.value)] for r in analysis.rows)
    return buffer.getvalue().encode()


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _json(objectives: dict[str, Objective], analyses: dict[str, Analysis], lines: list[str]) -> bytes:
    document = {
        "paper": PAPER,
        "methods": "docs/methods.md §3",
        "objectives": [{"spec": s, "objective": str(o), "describe": o.describe()} for s, o in objectives.items()],
        "headline": lines,
        "analyses": {
            name: {
                "png": f"{name}.png",
                "csv": f"{name}.csv",
                "title": a.title,
                "x": a.x,
                "value": a.value,
                "expected": a.expected,
                "settings": a.settings,
                "rows": [
                    {"objective": r.objective, "x": r.x, "series": r.series, "value": _finite(r.value)} for r in a.rows
                ],
            }
            for name, a in analyses.items()
        },
    }
    return json.dumps(document, indent=1, ensure_ascii=False, allow_nan=False).encode()


def _png(analysis: Analysis, style: dict) -> bytes:
    from preftune.analysis.plots import FIGURES  # matplotlib only when a report is drawn

    buffer = io.BytesIO()
    FIGURES[analysis.name](analysis, style).savefig(buffer, format="png")
    return buffer.getvalue()


def write_gradient_report(
    specs: Sequence[str],
    out_dir: str | Path,
    *,
    n: int = 10,
    vocab_size: int = SMOLLM2_VOCAB,
    zipf_exponent: float = 1.0,
    top_k: int = 10,
) -> GradientReport:
    """Write P1's gradient analysis of ``specs`` (e.g. ``["mle", "ul", "exmate", "dpo", "dpo+exmate"]``).

    Files in ``out_dir`` (created if needed), each analysis as ``<name>.png`` and ``<name>.csv``
    (tidy: objective, x, series, value) for name in ``weight_vs_probability``,
    ``dpo_weight_vs_margin``, ``logit_space``, ``literal_similarity``, plus ``gradient_analysis.json``
    (the objectives' full descriptions, settings, headline and every number). ``n`` is the number of
    tokens per synthetic response; ``vocab_size``, ``zipf_exponent`` and ``top_k`` shape the
    logit-space vocabulary. Raises :class:`SpecError`, writing nothing, if any spec is invalid.
    """
    objectives = parse_specs(specs)
    if n < 1:
        raise SpecError(f"n must be at least 1 token, got {n}")
    weights = weight_vs_probability(objectives, n=n)
    analyses = {
        "weight_vs_probability": weights,
        "dpo_weight_vs_margin": weight_vs_margin(objectives, n=n),
        "logit_space": logit_space(weights, vocab_size=vocab_size, exponent=zipf_exponent, top_k=top_k),
        "literal_similarity": literal_similarity(objectives, n=n),
    }
    lines = headline(analyses, set(objectives))
    from preftune.analysis.plots import styles

    style = styles(list(objectives))
    outputs = {}
    for name, analysis in analyses.items():
        outputs[f"{name}.png"] = _png(analysis, style)
        outputs[f"{name}.csv"] = _csv(analysis)
    outputs[JSON_NAME] = _json(objectives, analyses, lines)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = [write_atomic(folder / name, data) for name, data in outputs.items()]
    return GradientReport(files=files, headline=lines)
