"""The length claim of P3 (Tajwar et al. 2024; METHODS.md §7) for ``preftune reproduce P3``.

Runs :func:`preftune.lab.length.run_length_study` on the three synthetic tasks and decides the
claim from the numbers. **[our choice]** Each method's score on a task is the mean of its measure
(mean length; distance to the mode for ``mode``) over the checkpoints after step 0: the area under
its curve, lower meaning it reached the target sooner. Checks: on ``min`` and on ``skew``,
on-policy DPO's score is the lowest of all methods; on ``mode``, the scores lie within
``MODE_SPREAD`` tokens of each other. One seed per task (a CPU budget): the scores carry no
interval, and the report says so.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from preftune.reproduce.report import ClaimSection, markdown_table
from preftune.reproduce.verdicts import aggregate

TASKS = ("min", "skew", "mode")
MODE_SPREAD = 1.0  # tokens: "alike" on the mode task: every score within this of every other
STEPS = {"test": 2, "small": 20, "full": 60}


def curve_score(values: list[float]) -> float:
    """The mean of a curve's measures after step 0 (lower: the target reached sooner)."""
    later = values[1:] or values
    return sum(later) / len(later)


def length_checks(scores: dict[str, dict[str, float]]) -> list[tuple[str, bool, str]]:
    """``(check, passed, why)`` per task of ``scores`` (task -> method -> score)."""
    out = []
    for task in ("min", "skew"):
        if task in scores:
            ranked = sorted(scores[task].items(), key=lambda kv: kv[1])
            best, value = ranked[0]
            out.append((f"{task}: on-policy DPO lowest", best == "onpolicy_dpo",
                        f"lowest {best} {value:.2f}"))  # fmt: skip
    if "mode" in scores:
        values = list(scores["mode"].values())
        spread = max(values) - min(values)
        out.append((f"mode: scores within {MODE_SPREAD:g} token", spread <= MODE_SPREAD,
                    f"spread {spread:.2f}"))  # fmt: skip
    return out


def length_study(scale: str, out: Path, say: Callable[[str], Any] = print) -> ClaimSection:
    """Run the three tasks at ``scale``, save their figures in ``out``; the claim's section."""
    from preftune.lab.length import LengthConfig, run_length_study
    from preftune.lab.plots import length_figure, save_png
    from preftune.reproduce.p3 import LENGTH_CLAIM, LENGTH_TITLE

    scores: dict[str, dict[str, float]] = {}
    data: dict[str, Any] = {}
    figures = []
    for task in TASKS:
        say(f"length task {task}")
        result = run_length_study(LengthConfig(task=task, steps=STEPS.get(scale, 20)))
        scores[task] = {c.method: curve_score(c.values(task)) for c in result.curves}
        data[task] = result.to_dict()
        name = f"length_{task}.png"
        save_png(length_figure(result), Path(out) / name)
        figures.append(name)
    checks = length_checks(scores)
    rows = [(task, method, f"{score:.2f}") for task in TASKS for method, score in scores[task].items()]
    measured = "\n".join([
        "The tiny model, first taught to recite the alphabet and stop (`preftune lab length`), trained from the "
        f"same start by each method for {STEPS.get(scale, 20)} steps; one seed per task, so no interval.", "",
        "Score: the mean of the task's measure (mean length; distance to the mode for `mode`) over the "
        "checkpoints after step 0 — lower reached the target sooner.", "",
        markdown_table(("task", "method", "score"), rows), "",
        markdown_table(("check", "result", "why"), [(n, "pass" if p else "fail", w) for n, p, w in checks]),
    ])  # fmt: skip
    passed = [p for _, p, _ in checks]
    reason = "; ".join(f"{n}: {'pass' if p else 'fail'} ({w})" for n, p, w in checks) + " (one seed)."
    data["scores"] = scores
    return ClaimSection("length", LENGTH_TITLE, LENGTH_CLAIM, measured, aggregate(passed), reason, tuple(figures),
                        data)  # fmt: skip
