"""Reproduce P1's claims (Tuan & Wang 2024, *A Gradient Analysis Framework for Rewarding Good and Penalizing
Bad Examples in Language Models*; docs/methods.md §2, §3) and write a Markdown report.

:func:`reproduce_p1` runs, at a chosen scale:

- (a) ``preftune analyze gradients`` on ``mle, ul, exmate, dpo, dpo+mle, dpo+exmate``; each of the paper's
  statements about the weights is checked against the numbers it writes
  (:func:`~preftune.reproduce.rules.gradient_checks`);
- (b), (c) every objective trained on the same pairs and seeds (:mod:`preftune.reproduce.p1_runs`): held-out
  statistics with intervals over seeds, and win rates of the greedy answers against the starting model's and
  head to head, judged by the gold reward model (:mod:`preftune.reproduce.gold`), which no compared model saw,
  with the ``longer`` judge's verdict and the mean lengths beside.

Scales: ``small`` fits two CPU cores in about half an hour; ``full`` is sized for one GPU; ``test`` is
minimal, for the test suite (the tiny random model).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from preftune.errors import SpecError
from preftune.files import strict_json, write_atomic, write_json_atomic
from preftune.reproduce.gold import GOLD_SCALES, GoldEvaluator, GoldSettings, check_disjoint, ensure_gold
from preftune.reproduce.p1_report import (
    appendix,
    companion_section,
    gradient_section,
    preamble,
    surrogate_section,
)
from preftune.reproduce.p1_runs import VARIANTS, held_out_prompts, run_all
from preftune.reproduce.report import render_report
from preftune.reproduce.verdicts import mean_interval

Say = Callable[[str], Any]
HEAD_TO_HEAD = (("exmate", "mle"), ("dpo+exmate", "dpo+mle"), ("exmate→dpo", "dpo+mle"))


@dataclass(frozen=True)
class P1Scale:
    """How big :func:`reproduce_p1` is.

    Attributes:
        name: ``test``, ``small`` or ``full``.
        training: the runs' settings by :class:`~preftune.run.config.RunConfig` section.
        seeds: the optimiser seeds every variant trains with.
        prompts: held-out prompts answered by every model.
        max_new_tokens: the answers' length limit.
        gold: the gold reward model's settings.
        margin: δ of the rules (nats per token for the chosen drift).
    """

    name: str
    training: dict[str, dict[str, Any]]
    seeds: tuple[int, ...]
    prompts: int
    max_new_tokens: int
    gold: GoldSettings = field(default_factory=GoldSettings)
    margin: float = 0.05


_TINY = {
    "model": {"name": "tiny-random"},
    "lora": {"rank": 4, "alpha": 8},
    "data": {"train": "bundled:hh-harmless", "eval_size": 4, "train_size": 4, "max_length": 96},
    "optim": {"lr": 1e-2, "batch_size": 2, "max_steps": 1, "warmup_ratio": 0.0, "mixed_precision": "no"},
    "eval": {"batch_size": 4},
}
_SMALL = {
    "model": {"name": "smollm2-135m-instruct"},
    "lora": {"rank": 8, "alpha": 16, "last_layers": 4},
    "data": {"train": "bundled:hh-harmless", "eval_size": 48, "train_size": 128, "max_length": 160},
    "optim": {"lr": 1e-3, "batch_size": 4, "max_steps": 32, "warmup_ratio": 0.1, "mixed_precision": "no"},
    "eval": {"batch_size": 8},
}
_FULL = {
    "model": {"name": "smollm2-135m-instruct"},
    "lora": {"enabled": False},
    "data": {"train": "bundled:hh-harmless", "eval_size": 100, "train_size": None, "max_length": 512},
    "optim": {"lr": 5e-6, "batch_size": 16, "max_steps": 140, "warmup_ratio": 0.1, "mixed_precision": "auto"},
    "eval": {"batch_size": 16},
}

SCALES = {
    # one seed, one step, two prompts: every wiring path in seconds (its intervals are n/a by design)
    "test": P1Scale("test", _TINY, (0,), 2, 4, GOLD_SCALES["test"]),
    "small": P1Scale("small", _SMALL, (0, 1, 2), 40, 48, GOLD_SCALES["small"]),
    "full": P1Scale("full", _FULL, (0, 1, 2, 3, 4), 100, 128, GOLD_SCALES["full"]),
}


def get_scale(name: str) -> P1Scale:
    """The scale called ``name``; an unknown one is refused with the known ones."""
    if name not in SCALES:
        raise SpecError(f"unknown scale '{name}'; choose from {', '.join(s for s in SCALES if s != 'test')}")
    return SCALES[name]


def _gradients(out: Path) -> tuple[dict[str, Any], tuple[str, ...]]:
    """``preftune analyze gradients`` into ``out/gradients``; its JSON and the two figures copied beside the report."""
    from preftune.analysis.report import JSON_NAME, write_gradient_report

    folder = out / "gradients"
    write_gradient_report(["mle", "ul", "exmate", "dpo", "dpo+mle", "dpo+exmate"], folder)
    figures = ("weight_vs_probability.png", "dpo_weight_vs_margin.png")
    for name in figures:
        shutil.copyfile(folder / name, out / name)
    return json.loads((folder / JSON_NAME).read_text(encoding="utf-8")), figures


def reproduce_p1(
    scale: str | P1Scale, out: Path | str, say: Say = print, gold_source: Path | None = None, cache: Path | None = None
) -> dict[str, Any]:
    """Run P1's studies at ``scale`` and write ``report.md``, PNGs and ``results.json`` to ``out``.

    ``gold_source``: the gold pairs' HH-RLHF file (default :func:`preftune.reproduce.gold.gold_source`);
    ``cache``: where the gold model is cached (default under ``$PREFTUNE_CACHE``).
    """
    from preftune.reproduce.answers import gold_scores, start_answers

    settings = get_scale(scale) if isinstance(scale, str) else scale
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    document, figures = _gradients(out)
    prompts, used = held_out_prompts(settings.training, settings.prompts)
    gold = ensure_gold(settings.gold, used, say, gold_source, cache)
    check_disjoint(gold, used, "P1's training and held-out pairs")
    seconds["gold"] = time.perf_counter() - began
    model = settings.training["model"]["name"]
    start = start_answers(model, prompts, settings.max_new_tokens, None if cache is None else cache / "answers")
    clock = time.perf_counter()
    runs = run_all(settings.training, settings.seeds, prompts, settings.max_new_tokens, say)
    seconds["training"] = time.perf_counter() - clock
    scores = gold_scores(gold.scorer().score, prompts, start, runs)
    sections = [
        gradient_section(document, figures),
        surrogate_section(runs, scores, start, gold, settings.margin),
        companion_section(runs, scores, gold),
    ]
    seconds["total"] = time.perf_counter() - began
    results = _results(settings, sections, seconds, gold, runs, start, scores)
    text = render_report(_title(settings), preamble(settings, seconds, gold, runs, scores, start), sections, appendix())
    write_atomic(out / "report.md", text.encode("utf-8"))
    write_json_atomic(out / "results.json", results)
    say(f"wrote {out / 'report.md'} and {out / 'results.json'} in {seconds['total']:.0f} s")
    return results


def _results(
    settings: P1Scale, sections: list, seconds: dict, gold: GoldEvaluator, runs: dict, start: list, scores: dict
) -> dict[str, Any]:
    from preftune import __version__

    per_variant = {
        v: {
            "metrics": {
                k: mean_interval([r.metrics.get(k, float("nan")) for r in seeds]).to_dict() for k in seeds[0].metrics
            },
            "per_seed": [
                {"seed": r.seed, "metrics": r.metrics, "seconds": r.seconds, "answers": r.answers} for r in seeds
            ],
            "gold_scores": scores[v],
        }
        for v, seeds in runs.items()
        if seeds
    }
    return strict_json(
        {
            "paper": "P1",
            "scale": settings.name,
            "settings": asdict(settings),
            "preftune": __version__,
            "seconds": seconds,
            "gold": gold.to_json(),
            "variants": list(VARIANTS),
            "runs": per_variant,
            "start": {"gold_scores": scores["start"], "answers": start},
            "claims": {section.key: section.to_json() for section in sections},
        }
    )


def _title(settings: P1Scale) -> str:
    return f"Reproducing P1 (Tuan & Wang 2024), scale `{settings.name}`"
