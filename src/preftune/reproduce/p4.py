"""Reproduce P4's claims (Chen et al. 2024, *Towards Improved Preference Optimization Pipeline: from Data
Generation to Budget-Controlled Regularization*; docs/methods.md §5) and write a Markdown report.

:func:`reproduce_p4` runs, at a chosen scale:

- the ranking study on the OpenAssistant trees (:mod:`preftune.reproduce.p4_ranking`): (a) judge calls of IPR
  against a round robin and (b) agreement with the human ranks of IPR against the gold reward model's scores;
- (d) the whole pipeline (:mod:`preftune.reproduce.p4_pipeline`): N completions per P1 training prompt from the
  starting model, ranked by IPR with the scale's judge (``longer`` offline, a stand-in for the paper's GPT-4),
  ``dpo+bcr`` trained on best against worst and on the original pairs of the same prompts, the two models'
  answers compared by the gold evaluator (:mod:`preftune.reproduce.p4_pipeline_report`).

(c) budget-controlled regularisation is reported as **not run** (not built yet), never left out.

The gold evaluator is the one of :data:`preftune.reproduce.gold.GOLD_SCALES` at the same scale, with the
prompts P1's runs read excluded as well as the trees', so ``preftune reproduce all`` trains it once.

Scales: ``test`` (a few trees, the tiny random gold model and policy: seconds, for the test suite); ``small``
(every tree and turn, the SmolLM2 gold model and policy, (d) on P1's 128 training prompts; two CPU cores);
``full`` (the same trees: they hold only 100 prompts; the full-scale gold model and P1's full training; one GPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from preftune.errors import SpecError
from preftune.files import strict_json, write_atomic, write_json_atomic
from preftune.lab.plots import save_png
from preftune.reproduce.gold import GOLD_SCALES, GoldEvaluator, GoldSettings, check_disjoint, ensure_gold
from preftune.reproduce.p4_pipeline import PIPELINE_SCALES, PipelineSettings, run_pipeline_study
from preftune.reproduce.p4_pipeline_report import judge_tau, pipeline_appendix, pipeline_not_run, pipeline_section
from preftune.reproduce.p4_ranking import DEFAULT_TREES, read_groups, run_ranking_study, tree_pairs
from preftune.reproduce.p4_report import (
    appendix,
    calls_section,
    pending_sections,
    preamble,
    ranking_figure,
    ranking_section,
)
from preftune.reproduce.report import render_report

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
        exclude_p1: also keep the gold model off the pairs P1's runs at this scale read (so it is P1's gold model).
        seed: the seed of the replies' shuffle and of the random control judge.
        pipeline: the settings of (d), the whole pipeline (None: not run at this scale).
    """

    name: str
    trees: int | None
    turns: str
    gold: GoldSettings
    exclude_p1: bool = True
    seed: int = 0
    pipeline: PipelineSettings | None = None


SCALES = {
    "test": P4Scale("test", 6, "first", GOLD_SCALES["test"], exclude_p1=False, pipeline=PIPELINE_SCALES["test"]),
    "small": P4Scale("small", None, "all", GOLD_SCALES["small"], pipeline=PIPELINE_SCALES["small"]),
    "full": P4Scale("full", None, "all", GOLD_SCALES["full"], pipeline=PIPELINE_SCALES["full"]),
}


def get_scale(name: str) -> P4Scale:
    """The scale called ``name``; an unknown one is refused with the known ones."""
    if name not in SCALES:
        raise SpecError(f"unknown scale '{name}'; choose from {', '.join(s for s in SCALES if s != 'test')}")
    return SCALES[name]


def _gold(settings: P4Scale, trees: Path, say: Say, gold_source: Path | None, cache: Path | None) -> GoldEvaluator:
    """The scale's gold evaluator, kept off the trees (and off P1's pairs when ``exclude_p1``)."""
    exclude = tree_pairs(trees, settings.trees)
    if settings.exclude_p1:
        from preftune.reproduce.p1 import SCALES as P1_SCALES
        from preftune.reproduce.p1_runs import held_out_prompts

        exclude += held_out_prompts(P1_SCALES[settings.name].training, 1)[1]
    gold = ensure_gold(settings.gold, exclude, say, gold_source, cache)
    check_disjoint(gold, tree_pairs(trees, settings.trees), "P4's OpenAssistant trees")
    return gold


def reproduce_p4(
    scale: str | P4Scale,
    out: Path | str,
    say: Say = print,
    gold_source: Path | None = None,
    cache: Path | None = None,
    trees: Path = DEFAULT_TREES,
) -> dict[str, Any]:
    """Run P4's studies at ``scale`` and write ``report.md``, the PNG and ``results.json`` to ``out``.

    ``gold_source``/``cache``: as :func:`preftune.reproduce.p1.reproduce_p1`'s; ``trees``: the OpenAssistant file.
    """
    settings = get_scale(scale) if isinstance(scale, str) else scale
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    seconds: dict[str, float] = {}
    gold = _gold(settings, trees, say, gold_source, cache)
    seconds["gold"] = time.perf_counter() - began
    clock = time.perf_counter()
    groups = read_groups(trees, settings.trees, settings.turns, settings.seed)
    scorer = gold.scorer()
    study = run_ranking_study(groups, scorer.score, settings.seed)
    seconds["ranking"] = time.perf_counter() - clock
    say(f"P4: ranked {len(groups)} OpenAssistant prompts in {seconds['ranking']:.0f} s")
    save_png(ranking_figure(study), out / FIGURE)
    sections = [calls_section(study, (FIGURE,)), ranking_section(study, gold, ()), *pending_sections()]
    sections.append(_pipeline(settings, gold, scorer.score, study, seconds, say, cache))
    seconds["total"] = time.perf_counter() - began
    results = _results(settings, sections, seconds, gold, study.to_json())
    text = render_report(
        _title(settings), preamble(settings, seconds, gold, str(trees)), sections, appendix() + pipeline_appendix()
    )
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
    settings: P4Scale, sections: list, seconds: Mapping[str, float], gold: GoldEvaluator, study: dict[str, Any]
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
            "claims": {section.key: section.to_json() for section in sections},
        }
    )


def _title(settings: P4Scale) -> str:
    return f"Reproducing P4 (Chen et al. 2024), scale `{settings.name}`"
