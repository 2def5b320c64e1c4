"""Reproduce P2's claim (Grinsztajn et al. 2024, *Averaging log-likelihoods in direct alignment*; docs/methods.md
§2, §6) and write a Markdown report.

:func:`reproduce_p2` trains ``dpo`` and ``ipo`` with summed and with averaged log-likelihoods over a grid of β,
from the same start on the same pairs and seeds (:func:`preftune.reproduce.p1_runs.train_variant`), answers the
same held-out prompts greedily, and scores the answers with the gold reward model
(:mod:`preftune.reproduce.gold`); the report plots mean length against mean gold score per run and decides the
verdict with :func:`preftune.reproduce.rules.averaging_checks` (:mod:`preftune.reproduce.p2_report`).

Scales: ``test`` (the tiny random model, two β, one seed: the wiring, for the test suite); ``small`` (SmolLM2
with LoRA on its last layers, P1's small data so the gold model is shared; two CPU cores); ``full`` (full
fine-tuning, one GPU). The data settings of each scale are P1's, so the gold model is P1's.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from preftune.errors import SpecError
from preftune.files import strict_json, write_atomic, write_json_atomic
from preftune.lab.plots import save_png
from preftune.reproduce.gold import GOLD_SCALES, GoldSettings, check_disjoint, ensure_gold
from preftune.reproduce.p1 import SCALES as P1_SCALES
from preftune.reproduce.p1_runs import Run, held_out_prompts, train_variant
from preftune.reproduce.p2_report import Point, appendix, averaging_section, preamble, scatter_figure
from preftune.reproduce.report import render_report

Say = Callable[[str], Any]
FIGURE = "p2_length_vs_score.png"


@dataclass(frozen=True)
class P2Scale:
    """How big :func:`reproduce_p2` is.

    Attributes:
        name: ``test``, ``small`` or ``full``.
        training: the runs' settings by :class:`~preftune.run.config.RunConfig` section (P1's of the same scale).
        losses: the direct alignment losses compared.
        betas: the grid of β.
        seeds: the optimiser seeds.
        prompts, max_new_tokens: held-out prompts answered by every run, and the answers' length limit.
        gold: the gold reward model's settings.
    """

    name: str
    training: dict[str, dict[str, Any]]
    betas: tuple[float, ...]
    seeds: tuple[int, ...]
    prompts: int
    max_new_tokens: int
    gold: GoldSettings
    losses: tuple[str, ...] = field(default=("dpo", "ipo"))


SCALES = {
    "test": P2Scale("test", P1_SCALES["test"].training, (0.1, 1.0), (0,), 2, 4, GOLD_SCALES["test"]),
    "small": P2Scale("small", P1_SCALES["small"].training, (0.05, 0.2, 1.0), (0,), 40, 64, GOLD_SCALES["small"]),
    "full": P2Scale(
        "full", P1_SCALES["full"].training, (0.01, 0.05, 0.1, 0.5), (0, 1, 2), 100, 256, GOLD_SCALES["full"]
    ),
}


def get_scale(name: str) -> P2Scale:
    """The scale called ``name``; an unknown one is refused with the known ones."""
    if name not in SCALES:
        raise SpecError(f"unknown scale '{name}'; choose from {', '.join(s for s in SCALES if s != 'test')}")
    return SCALES[name]


def objective(loss: str, averaged: bool, beta: float) -> str:
    """The objective expression of one run, e.g. ``dpo(beta=0.1, average=True)``."""
    return f"{loss}(beta={beta:g}, average={averaged})"


def grid(settings: P2Scale) -> list[tuple[int, str, float, bool]]:
    """Every (seed, loss, β, averaged?) of the scale, summed before averaged at each β."""
    return [
        (seed, loss, beta, averaged)
        for seed in settings.seeds
        for loss in settings.losses
        for beta in settings.betas
        for averaged in (False, True)
    ]


def train_points(settings: P2Scale, prompts: Sequence[Any], score: Callable, say: Say) -> list[Point]:
    """Every loss × averaging × β × seed trained, answered and scored."""
    from preftune.reproduce.workers import map_runs

    cells = grid(settings)
    specs = [objective(loss, averaged, beta) for _, loss, beta, averaged in cells]
    with tempfile.TemporaryDirectory(prefix="preftune-p2-") as tmp:
        jobs = [
            (
                settings.training,
                spec,
                seed,
                Path(tmp) / f"{loss}-{beta:g}-{'avg' if averaged else 'sum'}-{seed}",
                prompts,
                settings.max_new_tokens,
            )
            for spec, (seed, loss, beta, averaged) in zip(specs, cells, strict=True)
        ]

        def done(index: int, run: Run) -> None:
            mean = sum(len(a) for a in run.answers) / len(run.answers)
            say(f"P2: {specs[index]}, seed {run.seed}: {run.seconds:.0f} s, mean length {mean:.0f}")

        runs = map_runs(train_variant, jobs, done)
    return [
        Point(loss, averaged, beta, seed, [len(a) for a in run.answers], score(list(prompts), run.answers))
        for (seed, loss, beta, averaged), run in zip(cells, runs, strict=True)
    ]


def reproduce_p2(
    scale: str | P2Scale, out: Path | str, say: Say = print, gold_source: Path | None = None, cache: Path | None = None
) -> dict[str, Any]:
    """Run P2's study at ``scale`` and write ``report.md``, the scatter PNG and ``results.json`` to ``out``.

    ``gold_source``/``cache``: as :func:`preftune.reproduce.p1.reproduce_p1`'s.
    """
    from preftune import __version__
    from preftune.reproduce.answers import start_answers

    settings = get_scale(scale) if isinstance(scale, str) else scale
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began, seconds = time.perf_counter(), dict[str, float]()
    prompts, used = held_out_prompts(settings.training, settings.prompts)
    gold = ensure_gold(settings.gold, used, say, gold_source, cache)
    check_disjoint(gold, used, "P2's training and held-out pairs")
    seconds["gold"] = time.perf_counter() - began
    scorer = gold.scorer()
    model = settings.training["model"]["name"]
    start_text = start_answers(model, prompts, settings.max_new_tokens, None if cache is None else cache / "answers")
    start = Point("start", False, 0.0, 0, [len(a) for a in start_text], scorer.score(list(prompts), start_text))
    clock = time.perf_counter()
    points = train_points(settings, prompts, scorer.score, say)
    seconds["training"] = time.perf_counter() - clock
    save_png(scatter_figure(points, start), out / FIGURE)
    sections = [averaging_section(points, start, gold, (FIGURE,))]
    seconds["total"] = time.perf_counter() - began
    results = strict_json(
        {
            "paper": "P2",
            "scale": settings.name,
            "preftune": __version__,
            "settings": asdict(settings),
            "seconds": seconds,
            "gold": gold.to_json(),
            "start": start.to_json(),
            "runs": [p.to_json() for p in points],
            "claims": {s.key: s.to_json() for s in sections},
        }
    )
    title = f"Reproducing P2 (Grinsztajn et al. 2024), scale `{settings.name}`"
    write_atomic(
        out / "report.md", render_report(title, preamble(settings, seconds, gold), sections, appendix()).encode()
    )
    write_json_atomic(out / "results.json", results)
    say(f"wrote {out / 'report.md'} and {out / 'results.json'} in {seconds['total']:.0f} s")
    return results
