"""P4's claim (d) in the report (Chen et al. 2024, *Towards Improved Preference Optimization Pipeline: from Data
Generation to Budget-Controlled Regularization*): the numbers of :mod:`preftune.reproduce.p4_pipeline`, the
win-rate tables P1's report uses (:mod:`preftune.reproduce.p1_report`), the verdict of
:func:`preftune.reproduce.rules.pipeline_checks`."""

from __future__ import annotations

from typing import Any

from preftune.reproduce.gold import GoldEvaluator
from preftune.reproduce.p1_report import head_to_head_table, results_table
from preftune.reproduce.p4_pipeline import ORIGINAL, PIPELINE, PipelineStudy
from preftune.reproduce.p4_report import PIPELINE_CLAIM
from preftune.reproduce.report import ClaimSection, not_run_section
from preftune.reproduce.rules import claim_reason, pipeline_checks, pipeline_verdict
from preftune.reproduce.verdicts import Interval, mean_interval

TITLE = "(d) The whole pipeline beats training on the original pairs"


def judge_tau(ranking: Any, judge: str) -> Interval | None:
    """The IPR τ with the human ranks of ``judge`` in the ranking study of (b), when (b) ranked with it."""
    record = getattr(ranking, "records", {}).get(f"ipr:{judge}")
    return None if record is None else mean_interval(record.taus)


def _judge_note(judge: str, tau: Interval | None) -> str:
    """What the ranking judge is, against the paper's GPT-4."""
    agreement = "" if tau is None else f"; here its IPR ranking has Kendall τ {tau.text()} with the human ranks in (b)"
    if judge == "longer":
        return (
            "The paper ranked with GPT-4 as the pairwise judge; offline we have none, so the `longer` judge (the "
            "longer reply wins) stands in: a heuristic, not a model of quality, chosen because it agreed best with "
            f"people's ranks of the OpenAssistant replies among the offline judges of (b){agreement}. It pays for "
            "length by construction: the pipeline's chosen reply is the longest sample and its rejected the "
            "shortest, so the pipeline teaches length, and the `longer` win rates below measure only that."
        )
    return f"The paper ranked with GPT-4 as the pairwise judge; here `{judge}`{agreement}."


def _setup(study: PipelineStudy, tau: Interval | None) -> str:
    s, g, r, o = study.settings, study.generation, study.ranking, study.original
    optim = s.training["optim"]
    cached = "read from the cache" if g["cached"] else f"{g['seconds']:.0f} s"
    return (
        f"**Prompts.** The {g['prompts']} distinct prompts of P1's first {o['pairs']} training pairs at this scale "
        f"(`{s.training['data']['train']}`); the gold evaluator never saw them (checked).\n\n"
        f"**Generate.** `{s.training['model']['name']}` (the starting model) sampled {s.n} completions per prompt "
        f"(temperature {s.temperature:g}, at most {s.max_new_tokens} new tokens, seed {s.sample_seed}; "
        f"`preftune generate`'s code; {cached}): {g['completions']} completions, {g['finished']:.0%} closed their "
        f"turn (the rest were cut at the limit), mean {g['mean_length']:.0f} characters.\n\n"
        f"**Rank.** IPR with the `{r['judge']}` judge (`preftune rank`'s code, both orders): {r['comparisons']} "
        f"comparisons, {r['judge_calls']} ordered judge calls; best against worst gives {r['pairs']} pairs "
        f"(prompts whose best and worst the judge could not tell apart give none: {r['undecided']}; left out for "
        f"an empty completion: {r['left_out_empty']}). {_judge_note(r['judge'], tau)}\n\n"
        f"**Train.** `{s.objective}` (default δ) from the same start on (i) the pipeline's {r['pairs']} pairs "
        f"(chosen {r['chosen_mean_length']:.0f} vs rejected {r['rejected_mean_length']:.0f} characters on average) "
        f"and (ii) the {o['pairs']} original human pairs of the same prompts (chosen {o['chosen_mean_length']:.0f} "
        f"vs rejected {o['rejected_mean_length']:.0f}): {optim['max_steps']} steps of {optim['batch_size']} pairs "
        f"at lr {optim['lr']}, seeds {list(s.seeds)}, both evaluated on P1's held-out human pairs. Each model "
        f"answers the first {len(study.prompts)} held-out prompts greedily (at most {s.answer_tokens} tokens)."
    )


def pipeline_section(study: PipelineStudy, gold: GoldEvaluator, tau: Interval | None = None) -> ClaimSection:
    """(d): the pipeline's model against the original pairs' model, head to head and against the start."""
    table, measured_rates = head_to_head_table(study.runs, study.scores, [(PIPELINE, ORIGINAL)])
    gold_rate, longer_rate = measured_rates[PIPELINE, ORIGINAL]
    checks = pipeline_checks(gold_rate.rate, gold.above_chance, PIPELINE, ORIGINAL)
    usable = (
        f"above chance ({gold.accuracy.text()} on its held-out pairs)"
        if gold.above_chance
        else f"at chance ({gold.accuracy.text()}): it can decide nothing here"
    )
    measured = "\n\n".join(
        [
            _setup(study, tau),
            "Both models against the starting model (statistics on the held-out human pairs, 95% interval over "
            "seeds; win rates: per-prompt means over seeds, bootstrapped over prompts):",
            results_table(study.runs, study.scores, study.start),
            "Head to head, the pipeline's model against the original pairs' (the verdict's numbers):",
            table,
            f"The gold evaluator is {usable}. The `longer` column is shown for the length effect, never used in the "
            "verdict; a gold win that comes with much longer answers may be the gold model's own taste for length.",
        ]
    )
    data = {
        "checks": [c.to_json() for c in checks],
        "head_to_head": {"gold": gold_rate.to_json(), "longer": longer_rate.to_json()},
        "judge_tau": None if tau is None else tau.to_dict(),
        "study": study.to_json(),
    }
    return ClaimSection(
        "pipeline",
        TITLE,
        PIPELINE_CLAIM,
        measured,
        pipeline_verdict(checks, gold.above_chance),
        claim_reason(checks, "inconclusive" if gold.above_chance else "cannot be tested"),
        (),
        data,
    )


def pipeline_not_run(why: str) -> ClaimSection:
    """(d) at a scale that runs no pipeline study."""
    return not_run_section("pipeline", TITLE, PIPELINE_CLAIM, why)


def pipeline_appendix() -> str:
    """The rule of (d), for *How the verdicts are decided*."""
    return """- **(d)** one check, the gold win rate of the pipeline's model against the original pairs' model, head to
  head: per held-out prompt 1 when the gold reward model scores the pipeline's greedy answer higher, 0.5 when
  equal, 0 when lower, averaged over seeds (paired by seed); the rate is the mean over prompts with a 95%
  percentile bootstrap interval. **holds** when the whole interval lies above 0.5; **does not hold here** when
  it lies below 0.5 (the original pairs win); **cannot be tested here** when it contains 0.5 (inconclusive:
  the gold evaluator cannot separate the two models at this scale) or when the gold evaluator is at chance on
  its own held-out pairs. The `longer` judge's rate and the mean lengths are shown beside, never used.
"""
