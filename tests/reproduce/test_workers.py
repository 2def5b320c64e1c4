"""Training runs shared out over processes: results in the jobs' order, failures raised, the count checked."""

from __future__ import annotations

import copy
import operator
import time
from pathlib import Path

import pytest

from preftune.errors import PreftuneError
from preftune.reproduce.p1 import SCALES
from preftune.reproduce.workers import current_workers, map_runs, parallel_runs, parse_workers
from tests.reproduce.conftest import bundled_rows


def test_results_come_back_in_the_jobs_order_from_two_processes() -> None:
    jobs = [(2, 10), (3, 2), (5, 3), (7, 1)]
    seen: list[tuple[int, int]] = []
    with parallel_runs(2):
        assert current_workers() == 2
        results = map_runs(pow, jobs, lambda index, result: seen.append((index, result)))
    assert current_workers() == 1
    assert results == [1024, 9, 125, 7]
    assert sorted(seen) == [(0, 1024), (1, 9), (2, 125), (3, 7)]


def test_each_result_is_handed_on_as_it_finishes() -> None:
    """A short job's result is said while a long one still runs (progress lines as runs end, not all at the end)."""
    said: dict[int, float] = {}
    with parallel_runs(2):
        map_runs(time.sleep, [(4.0,), (0.0,)], lambda index, _: said.setdefault(index, time.monotonic()))
    assert said[0] - said[1] > 2.0


def test_a_failing_job_is_raised_here() -> None:
    with parallel_runs(2), pytest.raises(ZeroDivisionError):
        map_runs(operator.truediv, [(1, 2), (1, 0), (3, 4)])
    with pytest.raises(ZeroDivisionError):  # in-process alike
        map_runs(operator.truediv, [(1, 0)])


def test_workers_setting_is_a_positive_count_or_auto() -> None:
    assert parse_workers("3") == 3 and parse_workers(1) == 1
    assert parse_workers("auto") >= 1
    for bad in ("0", "-1", "two", ""):
        with pytest.raises(PreftuneError, match="workers="):
            parse_workers(bad)


@pytest.mark.slow
def test_two_processes_train_what_one_does(tmp_path: Path) -> None:
    """P1's runs on the tiny model in two worker processes: the same numbers and answers as in this one."""
    from preftune.reproduce.p1_runs import run_all

    (tmp_path / "train.jsonl").write_text(bundled_rows(40, 120), encoding="utf-8")
    training = copy.deepcopy(SCALES["test"].training)
    training["data"]["train"] = str(tmp_path / "train.jsonl")
    prompts, variants = ["Hi?", "How do I bake bread?"], ("mle", "dpo")
    alone = run_all(training, (0, 1), prompts, 4, print, variants)
    with parallel_runs(2):
        shared = run_all(training, (0, 1), prompts, 4, print, variants)
    for variant in variants:
        assert [r.seed for r in shared[variant]] == [0, 1]
        for one, two in zip(alone[variant], shared[variant], strict=True):
            assert one.answers == two.answers
            for name, value in one.metrics.items():
                assert two.metrics[name] == pytest.approx(value, rel=1e-4, abs=1e-6), (variant, name)
