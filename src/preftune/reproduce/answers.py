"""Answers to held-out prompts and their win rates, shared by the P1, P2 and P4 reproductions.

- :func:`distinct_prompts`: the first held-out prompts of a run, each once.
- :func:`start_answers`: the starting model's greedy answers, cached under
  ``$PREFTUNE_CACHE/reproduce/answers`` by model, prompts and length (every experiment compares with them).
- :func:`gold_scores`: the gold reward model's score of the start's answers and of every trained run's.
- :func:`gold_wins` and :func:`length_wins`: per prompt, 1 when the model's answer scores higher than the
  baseline's (by the gold reward model, or by length: the ``longer`` judge), 0.5 when equal, 0 when lower.
- :func:`pooled_rate`: the win rate over prompts of the per-prompt mean over seeds, with a 95% percentile
  bootstrap interval over prompts (docs/methods.md §6), and both mean lengths.
- :func:`run_rates`: a variant's gold and ``longer`` win rates against another's (paired by seed) or the start's;
  :func:`rate_cells`: those as a table's cells (P1's and P4's win-rate tables).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from preftune.data.examples import PreferenceExample
from preftune.data.split import canonical
from preftune.files import write_atomic
from preftune.modeling.cache import cache_root
from preftune.reproduce.verdicts import Interval


def distinct_prompts(examples: Sequence[PreferenceExample], limit: int) -> list[Any]:
    """The first ``limit`` distinct prompts of ``examples`` (a run's held-out pairs), in order."""
    seen: dict[str, Any] = {}
    for example in examples:
        seen.setdefault(canonical(example.prompt), example.prompt)
        if len(seen) == limit:
            break
    return list(seen.values())


def answers(model: str, prompts: Sequence[Any], max_new_tokens: int, batch_size: int = 16) -> list[str]:
    """``model``'s greedy answer to each prompt (a built-in name, a model folder or a LoRA adapter folder);
    batches of 16 (SmolLM2 in float32 on 2 cores: 40 prompts in 31 s against 34 s in batches of 8, both
    shortest first)."""
    from preftune.evaluation.generate_eval import greedy_answers

    return greedy_answers(model, list(prompts), max_new_tokens, batch_size)


def start_answers(model: str, prompts: Sequence[Any], max_new_tokens: int, cache: Path | None = None) -> list[str]:
    """The starting model's answers, from the cache when the same model, prompts and length were answered."""
    key = hashlib.sha256(canonical([model, list(prompts), max_new_tokens]).encode("utf-8")).hexdigest()[:20]
    path = (cache or cache_root() / "reproduce" / "answers") / f"{key}.json"
    if path.is_file():
        return list(json.loads(path.read_text(encoding="utf-8"))["answers"])
    out = answers(model, prompts, max_new_tokens)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"model": model, "max_new_tokens": max_new_tokens, "answers": out}))
    return out


def gold_scores(
    score: Callable[[list[Any], list[str]], list[float]],
    prompts: Sequence[Any],
    start: list[str],
    runs: Mapping[str, Sequence[Any]],
) -> dict[str, Any]:
    """Rewards of the start's answers and of every run's (each with ``.answers`` to ``prompts``), by ``score``
    (the gold reward model's): ``{"start": [per prompt], name: [[per prompt] per seed]}``."""
    scores: dict[str, Any] = {"start": score(list(prompts), start)}
    for name, seeds in runs.items():
        scores[name] = [score(list(prompts), run.answers) for run in seeds]
    return scores


def compare(first: Sequence[float], second: Sequence[float]) -> list[float]:
    """Per item 1.0 when first > second, 0.5 when equal, 0.0 when lower."""
    return [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(first, second, strict=True)]


def gold_wins(model_scores: Sequence[float], baseline_scores: Sequence[float]) -> list[float]:
    """Per prompt: does the gold reward model score the model's answer above the baseline's (ties half)."""
    return compare(model_scores, baseline_scores)


def length_wins(model_answers: Sequence[str], baseline_answers: Sequence[str]) -> list[float]:
    """Per prompt: the ``longer`` judge's verdict (the longer answer wins, equal lengths tie)."""
    return compare([len(a) for a in model_answers], [len(b) for b in baseline_answers])


@dataclass(frozen=True)
class PooledRate:
    """A win rate with its interval over prompts, and the mean answer lengths (characters) of both sides."""

    rate: Interval
    mean_length: float
    baseline_mean_length: float
    prompts: int

    def to_json(self) -> dict[str, Any]:
        return {
            "rate": self.rate.to_dict(),
            "mean_length": self.mean_length,
            "baseline_mean_length": self.baseline_mean_length,
            "prompts": self.prompts,
        }


def pooled_rate(
    per_seed: Sequence[Sequence[float]], lengths: Sequence[Sequence[int]], baseline_lengths: Sequence[Sequence[int]]
) -> PooledRate:
    """The win rate of per-prompt means over seeds (``per_seed[s][i]``: seed s, prompt i), bootstrapped over
    prompts, with the mean lengths of both sides over every seed and prompt."""
    from preftune.evaluation.generative import win_rate

    prompts = len(per_seed[0])
    means = [sum(seed[i] for seed in per_seed) / len(per_seed) for i in range(prompts)]
    flat, base = [n for seed in lengths for n in seed], [n for seed in baseline_lengths for n in seed]
    result = win_rate(means, [0] * prompts, [0] * prompts)
    return PooledRate(
        Interval(result.win_rate, result.ci_low, result.ci_high),
        sum(flat) / len(flat),
        sum(base) / len(base),
        prompts,
    )


class Answered(Protocol):
    """A trained run with its greedy answers to the held-out prompts (:class:`preftune.reproduce.p1_runs.Run`)."""

    answers: list[str]


def run_rates(
    runs: Mapping[str, Sequence[Answered]],
    scores: Mapping[str, Any],
    first: str,
    second: str | None,
    start: list[str],
) -> tuple[PooledRate, PooledRate]:
    """(gold, ``longer``) win rates of ``first`` against ``second`` (None: the starting model's ``start``
    answers), paired by seed; ``scores`` as :func:`gold_scores` gives them."""
    a_runs = runs[first]
    b_answers = [start] * len(a_runs) if second is None else [r.answers for r in runs[second]]
    b_scores = [scores["start"]] * len(a_runs) if second is None else scores[second]
    gold = [gold_wins(a, b) for a, b in zip(scores[first], b_scores, strict=True)]
    longer = [length_wins(r.answers, b) for r, b in zip(a_runs, b_answers, strict=True)]
    lengths = [[len(t) for t in r.answers] for r in a_runs]
    base = [[len(t) for t in b] for b in b_answers]
    return pooled_rate(gold, lengths, base), pooled_rate(longer, lengths, base)


def rate_cells(gold: PooledRate, longer: PooledRate) -> tuple[str, str, str]:
    """A table's cells: the gold win rate, the ``longer`` judge's, and both mean lengths (characters)."""
    return (
        gold.rate.text(),
        longer.rate.text(),
        f"{gold.mean_length:.0f} vs {gold.baseline_mean_length:.0f}",
    )
