"""The length claim of P3 (Tajwar et al. 2024; docs/methods.md §7) for ``preftune reproduce P3``.

Runs :func:`preftune.lab.length.run_length_study` on the three synthetic tasks, once per seed (the
seeds share one warm model and change the data, the LoRA, the rounds and the measurement), and
decides the claim from the numbers. **[our choice]** Each method's score on a task and seed is the
mean of its measure (mean length; distance to the mode for ``mode``) over the checkpoints after
step 0: the area under its curve, lower meaning it reached the target sooner. Checks:

- on ``min`` and on ``skew``, *sooner than offline*: on-policy DPO's paired lead over each offline
  method (per seed, that method's score minus on-policy DPO's) has a 95% Student-t interval above 0;
- on ``min`` and on ``skew``, *fastest of all* (the claim's word): on-policy DPO has the lowest mean
  score, and its lead over the runner-up has an interval above 0;
- with one seed there are no intervals, and the leads' signs decide;
- on ``mode``, the mean scores lie within ``MODE_SPREAD`` tokens of each other.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from preftune.lab.bandit import mean_ci
from preftune.reproduce.report import ClaimSection, markdown_table
from preftune.reproduce.verdicts import aggregate

TASKS = ("min", "skew", "mode")
MODE_SPREAD = 1.0  # tokens: "alike" on the mode task: every mean score within this of every other
STEPS = {"test": 2, "small": 20, "full": 60}
SEEDS = {"test": 1, "small": 5, "full": 10}
OFFLINE = ("offline_dpo", "pref_ft")  # the methods trained on the fixed dataset
Scores = Mapping[str, Mapping[str, Sequence[float]]]
"""task -> method -> one score per seed."""


def curve_score(values: list[float]) -> float:
    """The mean of a curve's measures after step 0 (lower: the target reached sooner)."""
    later = values[1:] or values
    return sum(later) / len(later)


def _interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of a 95% t interval; low = high = NaN for one value."""
    import torch

    mean, half = mean_ci(torch.tensor(list(values), dtype=torch.float64))
    return mean, mean - half, mean + half


def _lead(by_method: Mapping[str, Sequence[float]], method: str) -> tuple[float, float, float]:
    """On-policy DPO's paired lead over ``method``: (mean, low, high) of its score minus on-policy DPO's."""
    diffs = [v - o for v, o in zip(by_method[method], by_method["onpolicy_dpo"], strict=True)]
    return _interval(diffs)


def _sooner(lead: tuple[float, float, float]) -> bool:
    """A lead that shows on-policy DPO got there sooner: its interval above 0 (one seed: the lead itself)."""
    mean, low, _ = lead
    return mean > 0 if math.isnan(low) else low > 0


def _text(lead: tuple[float, float, float]) -> str:
    mean, low, high = lead
    return f"{mean:+.2f}" + ("" if math.isnan(low) else f" [{low:+.2f}, {high:+.2f}]")


def _than_offline(task: str, by_method: Mapping[str, Sequence[float]]) -> tuple[str, bool, str] | None:
    """The check that on-policy DPO reaches ``task``'s target sooner than each offline method run."""
    offline = [m for m in OFFLINE if m in by_method]
    if "onpolicy_dpo" not in by_method or not offline:
        return None
    leads_ = {m: _lead(by_method, m) for m in offline}
    why = "; ".join(f"lead over {m} {_text(lead)}" for m, lead in leads_.items())
    return f"{task}: on-policy DPO sooner than offline", all(_sooner(v) for v in leads_.values()), why


def _fastest(task: str, by_method: Mapping[str, Sequence[float]]) -> tuple[str, bool, str]:
    """The check that on-policy DPO is the fastest of all: the lowest mean score and a lead over the
    runner-up whose interval lies above 0 (one seed: the lowest score decides)."""
    means = sorted((sum(v) / len(v), m) for m, v in by_method.items())
    best = means[0][1]
    name = f"{task}: on-policy DPO fastest of all"
    if best != "onpolicy_dpo" or len(means) < 2:
        return name, False, f"lowest {best} {means[0][0]:.2f}"
    runner = means[1][1]
    lead = _lead(by_method, runner)
    return name, _sooner(lead), f"lowest {best} {means[0][0]:.2f}; lead over runner-up {runner} {_text(lead)}"


def leads(scores: Scores) -> list[tuple[str, str, str, str]]:
    """On ``min`` and ``skew``: on-policy DPO's paired lead over each other method (their score minus its,
    per seed; positive: on-policy DPO got there sooner), ``(task, method, lead [95% CI], reading)``."""
    rows = []
    for task in ("min", "skew"):
        by_method = scores.get(task, {})
        if "onpolicy_dpo" not in by_method:
            continue
        for method in by_method:
            if method == "onpolicy_dpo":
                continue
            lead = _lead(by_method, method)
            _, low, high = lead
            if math.isnan(low):
                reading = "one seed"
            else:
                reading = "sooner" if low > 0 else ("later" if high < 0 else "not significant")
            rows.append((task, method, _text(lead), reading))
    return rows


def length_checks(scores: Scores) -> list[tuple[str, bool, str]]:
    """``(check, passed, why)`` per task of ``scores`` (task -> method -> per-seed scores)."""
    out = []
    for task in ("min", "skew"):
        if task in scores:
            offline = _than_offline(task, scores[task])
            out += [*([offline] if offline else []), _fastest(task, scores[task])]
    if "mode" in scores:
        values = [sum(v) / len(v) for v in scores["mode"].values()]
        spread = max(values) - min(values)
        out.append((f"mode: mean scores within {MODE_SPREAD:g} token", spread <= MODE_SPREAD, f"spread {spread:.2f}"))
    return out


def _rows(scores: Scores) -> list[tuple[str, str, str, str]]:
    rows = []
    for task, by_method in scores.items():
        for method, values in by_method.items():
            mean, low, high = _interval(values)
            interval = "" if math.isnan(low) else f" [{low:.2f}, {high:.2f}]"
            rows.append((task, method, f"{mean:.2f}{interval}", ", ".join(f"{v:.2f}" for v in values)))
    return rows


def _task_runs(task: str, steps: int, seeds: int, say: Callable[[str], Any], min_runs: list[Any] | None) -> list[Any]:
    """``seeds`` studies of ``task``. On ``skew`` the on-policy methods train exactly as on ``min`` (same warm
    model, prompts, reward and seeds: the tasks differ only in the offline data), so with ``min_runs`` given
    only the offline methods are trained and the on-policy curves are taken from them."""
    from preftune.lab.length import METHODS, ON_POLICY, LengthConfig, run_length_study

    reuse = task == "skew" and min_runs is not None
    methods = tuple(m for m in METHODS if not (reuse and m in ON_POLICY))
    results = []
    for seed in range(seeds):
        say(f"length task {task}, seed {seed + 1} of {seeds}" + (" (on-policy runs: min's)" if reuse else ""))
        result = run_length_study(LengthConfig(task=task, methods=methods, steps=steps, seed=seed))
        if reuse:
            borrowed = [c for c in min_runs[seed].curves if c.method in ON_POLICY]  # type: ignore[index]
            trained = {c.method: c for c in (*borrowed, *result.curves)}
            result = replace(result, curves=tuple(trained[m] for m in METHODS))
        results.append(result)
    return results


def length_study(scale: str, out: Path, say: Callable[[str], Any] = print) -> ClaimSection:
    """Run the three tasks at ``scale`` (``SEEDS[scale]`` seeds each), save their figures in ``out``; the section."""
    from preftune.lab.plots import length_figure, save_png
    from preftune.reproduce.p3 import LENGTH_CLAIM, LENGTH_TITLE

    steps, seeds = STEPS.get(scale, 20), SEEDS.get(scale, 3)
    scores: dict[str, dict[str, list[float]]] = {}
    data: dict[str, Any] = {}
    figures = []
    runs: dict[str, list[Any]] = {}
    for task in TASKS:
        results = runs[task] = _task_runs(task, steps, seeds, say, runs.get("min"))
        scores[task] = {c.method: [] for c in results[0].curves}
        for result in results:
            for curve in result.curves:
                scores[task][curve.method].append(curve_score(curve.values(task)))
        data[task] = [result.to_dict() for result in results]
        name = f"length_{task}.png"
        save_png(length_figure(results), Path(out) / name)
        figures.append(name)
    checks = length_checks(scores)
    measured = "\n".join(
        [
            "The tiny model, first taught to recite the alphabet and stop (`preftune lab length`), trained from the "
            f"same start by each method for {steps} steps, {seeds} seeds per task (the seeds share the warm model and "
            "change the offline data, the LoRA's initialisation, the on-policy samples and the measurement).",
            "",
            "Score: the mean of the task's measure (mean length; distance to the mode for `mode`) over the "
            "checkpoints after step 0 — lower reached the target sooner. Mean over seeds with its 95% t interval.",
            "",
            markdown_table(("task", "method", "score", "per seed"), _rows(scores)),
            "",
            "On-policy DPO's lead over each method, paired by seed (the method's score minus on-policy DPO's; "
            "positive: on-policy DPO reached the target sooner). On `skew` the on-policy methods train exactly as "
            "on `min` (the task differs in its offline data only): their runs are min's, so their rows repeat.",
            "",
            markdown_table(("task", "method", "lead [95% CI]", "on-policy DPO got there"), leads(scores)),
            "",
            markdown_table(("check", "result", "why"), [(n, "pass" if p else "fail", w) for n, p, w in checks]),
        ]
    )
    passed = [p for _, p, _ in checks]
    reason = "; ".join(f"{n}: {'pass' if p else 'fail'} ({w})" for n, p, w in checks) + f" ({seeds} seeds)."
    data["scores"] = scores
    return ClaimSection("length", LENGTH_TITLE, LENGTH_CLAIM, measured, aggregate(passed), reason, tuple(figures), data)
