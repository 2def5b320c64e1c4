"""Reproduce P4's claims (Chen et al. 2024, *Towards Improved Preference Optimization Pipeline: from Data
Generation to Budget-Controlled Regularization*; docs/methods.md §5) and write a Markdown report.

:func:`reproduce_p4` runs, at a chosen scale:

- the ranking study on the OpenAssistant trees (:mod:`preftune.reproduce.p4_ranking`): (a) judge calls of IPR
  against a round robin and (b) agreement with the human ranks of IPR against the gold reward model's scores;
- (c) budget-controlled regularisation (:mod:`preftune.reproduce.p4_bcr`): ``dpo``, ``dpo + bcr(delta=δ)`` over
  a grid of δ and ``dpo + dpop`` trained on P1's pairs and seeds, the held-out chosen drift and accuracy over
  training, the gold win rate against the starting model, and a verdict from
  :func:`preftune.reproduce.rules.bcr_verdict`;
- (d) the whole pipeline (:mod:`preftune.reproduce.p4_pipeline`): N completions per P1 training prompt from the
  starting model, ranked by IPR with the scale's judge (``longer`` offline, a stand-in for the paper's GPT-4),
  ``dpo+bcr`` trained on best against worst and on the original pairs of the same prompts, the two models'
  answers compared by the gold evaluator (:mod:`preftune.reproduce.p4_pipeline_report`).

The gold evaluator is the one of :data:`preftune.reproduce.gold.GOLD_SCALES` at the same scale, kept off the
trees and off every pair (c)'s and (d)'s runs read (P1's at the same scale), so ``preftune reproduce all`` trains
it once.

Scales: ``test`` (a few trees, the tiny random models, one seed, one δ, two steps: seconds, for the test suite;
its (c) has no interval, so its verdict is inconclusive by design); ``small`` (every tree and turn, SmolLM2;
(c): δ ∈ {0.05, 0.2}, seeds 0 and 1, P1's 32 steps evaluated every 8; (d) on P1's 128 training prompts; two CPU
cores); ``full`` (the same trees: they hold only 100 prompts; P1's full runs, one GPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from preftune.data.examples import PreferenceExample
from preftune.errors import SpecError
from preftune.files import strict_json, write_atomic, write_json_atomic
from preftune.lab.plots import save_png
from preftune.reproduce.gold import GOLD_SCALES, GoldEvaluator, GoldSettings, check_disjoint, ensure_gold
from preftune.reproduce.p1 import SCALES as P1_SCALES
from preftune.reproduce.p1_runs import held_out_prompts
from preftune.reproduce.p4_bcr import FIGURE as BCR_FIGURE
from preftune.reproduce.p4_bcr import (
    BcrStudy,
    bcr_section,
    curve_figure,
    mean_curves,
    run_study,
    runs_json,
    study_of,
)
from preftune.reproduce.p4_pipeline import PIPELINE_SCALES, PipelineSettings, run_pipeline_study
from preftune.reproduce.p4_pipeline_report import judge_tau, pipeline_appendix, pipeline_not_run, pipeline_section
from preftune.reproduce.p4_ranking import DEFAULT_TREES, read_groups, run_ranking_study, tree_pairs
from preftune.reproduce.p4_report import (
    appendix,
    calls_section,
    preamble,
    ranking_figure,
    ranking_section,
)
from preftune.reproduce.report import ClaimSection, render_report
from preftune.reproduce.rules import bcr_rule

Say = Callable[[str], Any]
FIGURE = "p4_ranking.png"


@dataclass(frozen=True)
class P4Scale:
    """How big :func:`reproduce_p4` is.

    Attributes:
        name: ``test``, ``small`` or ``full``.
        trees: how many OpenAssistant trees are read (None: all 100).
        turns: ``all`` (every ranked user turn) or ``first`` (the root prompt's replies only).
        gold: the gold reward model's settings.
        bcr: (c)'s runs (P1's at the same scale, so the gold model, kept off their pairs, is P1's).
        seed: the seed of the replies' shuffle and of the random control judge.
        pipeline: the settings of (d), the whole pipeline (None: not run at this scale).
    """

    name: str
    trees: int | None
    turns: str
    gold: GoldSettings
    bcr: BcrStudy
    seed: int = 0
    pipeline: PipelineSettings | None = None


SCALES = {
    # (c): two steps evaluated at every step, so the curve has a point between the start and the end
    "test": P4Scale(
        "test",
        6,
        "first",
        GOLD_SCALES["test"],
        study_of(P1_SCALES["test"], (0.05,), (0,), 1, 2),
        pipeline=PIPELINE_SCALES["test"],
    ),
    # (c): 4 variants × 2 seeds of P1's small runs (~70-90 s each with answers), evaluated every 8 of 32 steps
    "small": P4Scale(
        "small",
        None,
        "all",
        GOLD_SCALES["small"],
        study_of(P1_SCALES["small"], (0.05, 0.2), (0, 1), 8),
        pipeline=PIPELINE_SCALES["small"],
    ),
    "full": P4Scale(
        "full",
        None,
        "all",
        GOLD_SCALES["full"],
        study_of(P1_SCALES["full"], (0.02, 0.05, 0.2), (0, 1, 2), 20),
        pipeline=PIPELINE_SCALES["full"],
    ),
}


def get_scale(name: str) -> P4Scale:
    """The scale called ``name``; an unknown one is refused with the known ones."""
    if name not in SCALES:
        raise SpecError(f"unknown scale '{name}'; choose from {', '.join(s for s in SCALES if s != 'test')}")
    return SCALES[name]


def _gold(
    settings: P4Scale,
    trees: Path,
    used: Sequence[PreferenceExample],
    say: Say,
    gold_source: Path | None,
    cache: Path | None,
) -> GoldEvaluator:
    """The scale's gold evaluator, kept off the trees and off ``used``, every pair (c)'s runs read."""
    pairs = tree_pairs(trees, settings.trees)
    gold = ensure_gold(settings.gold, [*pairs, *used], say, gold_source, cache)
    check_disjoint(gold, pairs, "P4's OpenAssistant trees")
    check_disjoint(gold, used, "P4 (c)'s training and held-out pairs")
    return gold


def _bcr(
    study: BcrStudy, prompts: list[Any], scorer: Any, gold: GoldEvaluator, cache: Path | None, out: Path, say: Say
) -> tuple[ClaimSection, dict[str, Any]]:
    """(c): the runs trained, answered and scored; its figure written to ``out``; its section and numbers."""
    from preftune.reproduce.answers import gold_scores, start_answers

    model = study.training["model"]["name"]
    start = start_answers(model, prompts, study.max_new_tokens, None if cache is None else cache / "answers")
    runs = run_study(study, prompts, say)
    scores = gold_scores(scorer.score, prompts, start, runs)
    section = bcr_section(study, runs, scores, start, gold, (BCR_FIGURE,))
    save_png(curve_figure(mean_curves(runs)), out / BCR_FIGURE)
    return section, runs_json(runs, scores, start)


def reproduce_p4(
    scale: str | P4Scale,
    out: Path | str,
    say: Say = print,
    gold_source: Path | None = None,
    cache: Path | None = None,
    trees: Path = DEFAULT_TREES,
) -> dict[str, Any]:
    """Run P4's studies at ``scale`` and write ``report.md``, the PNGs and ``results.json`` to ``out``.

    ``gold_source``/``cache``: as :func:`preftune.reproduce.p1.reproduce_p1`'s; ``trees``: the OpenAssistant file.
    """
    settings = get_scale(scale) if isinstance(scale, str) else scale
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    seconds: dict[str, float] = {}
    prompts, used = held_out_prompts(settings.bcr.training, settings.bcr.prompts)
    gold = _gold(settings, trees, used, say, gold_source, cache)
    seconds["gold"] = time.perf_counter() - began
    clock = time.perf_counter()
    groups = read_groups(trees, settings.trees, settings.turns, settings.seed)
    scorer = gold.scorer()
    study = run_ranking_study(groups, scorer.score, settings.seed)
    seconds["ranking"] = time.perf_counter() - clock
    say(f"P4: ranked {len(groups)} OpenAssistant prompts in {seconds['ranking']:.0f} s")
    save_png(ranking_figure(study), out / FIGURE)
    clock = time.perf_counter()
    bcr, bcr_numbers = _bcr(settings.bcr, prompts, scorer, gold, cache, out, say)
    seconds["bcr"] = time.perf_counter() - clock
    sections = [calls_section(study, (FIGURE,)), ranking_section(study, gold, ()), bcr]
    sections.append(_pipeline(settings, gold, scorer.score, study, seconds, say, cache))
    seconds["total"] = time.perf_counter() - began
    results = _results(settings, sections, seconds, gold, study.to_json(), bcr_numbers)
    rule = bcr_rule(settings.bcr.drift_margin, settings.bcr.accuracy_margin)
    closing = appendix(rule) + pipeline_appendix()
    text = render_report(_title(settings), preamble(settings, seconds, gold, str(trees)), sections, closing)
    write_atomic(out / "report.md", text.encode("utf-8"))
    write_json_atomic(out / "results.json", results)
    say(f"wrote {out / 'report.md'} and {out / 'results.json'} in {seconds['total']:.0f} s")
    return results


def _pipeline(
    settings: P4Scale, gold: GoldEvaluator, score: Callable, ranking: Any, seconds: dict, say: Say, cache: Path | None
) -> Any:
    """(d)'s section: the pipeline study at the scale's settings (its time in ``seconds["pipeline"]``)."""
    if settings.pipeline is None:
        return pipeline_not_run(f"the scale `{settings.name}` sets no pipeline study")
    clock = time.perf_counter()
    pipeline = run_pipeline_study(settings.pipeline, gold, score, say, cache)
    seconds["pipeline"] = time.perf_counter() - clock
    say(f"P4 (d): the pipeline study in {seconds['pipeline']:.0f} s")
    return pipeline_section(pipeline, gold, judge_tau(ranking, settings.pipeline.judge))


def _results(
    settings: P4Scale,
    sections: list,
    seconds: Mapping[str, float],
    gold: GoldEvaluator,
    study: dict[str, Any],
    bcr: dict[str, Any],
) -> dict[str, Any]:
    from preftune import __version__

    return strict_json(
        {
            "paper": "P4",
            "scale": settings.name,
            "settings": asdict(settings),
            "preftune": __version__,
            "seconds": dict(seconds),
            "gold": gold.to_json(),
            "ranking": study,
            "bcr": bcr,
            "claims": {section.key: section.to_json() for section in sections},
        }
    )


def _title(settings: P4Scale) -> str:
    return f"Reproducing P4 (Chen et al. 2024), scale `{settings.name}`"
