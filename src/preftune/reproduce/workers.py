"""A reproduction's independent training runs shared out over worker processes.

Each variant × seed of P1, P2 and P4 trains, answers and returns its numbers alone (its own folder, its own
model), so runs can go side by side. On a small CPU this pays because one small model's matmuls do not keep
every core busy: on 2 cores (AMD EPYC Zen 4), two of P1's runs in two one-thread processes took 155 s against
2 × 96 s one after the other in one two-thread process (1.24× the runs per hour). A GPU runs one at a time.

:func:`parallel_runs` sets how many processes the runs of the block use (the ``reproduce`` command's
``workers``); :func:`map_runs` runs a list of jobs with them, in-process when there is one. Results come back in
the jobs' order whatever order they finish in, so a report does not depend on the workers' timing (only on
rounding: a process with fewer threads sums in another order).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, TypeVar

from preftune.errors import PreftuneError

T = TypeVar("T")
_WORKERS: contextvars.ContextVar[int] = contextvars.ContextVar("preftune_reproduce_workers", default=1)


def auto_workers() -> int:
    """The default: one process on a GPU (it runs one model at a time well), else two when there are two cores."""
    import torch

    if torch.cuda.is_available():
        return 1
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def parse_workers(value: str | int) -> int:
    """``auto`` or a positive count of processes; anything else is refused in one line."""
    if str(value).strip().lower() == "auto":
        return auto_workers()
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise PreftuneError(f"workers={value}: give a number of processes of at least 1, or auto")
    return count


@contextlib.contextmanager
def parallel_runs(workers: int) -> Iterator[None]:
    """The reproductions' runs inside the block use ``workers`` processes."""
    token = _WORKERS.set(max(1, int(workers)))
    try:
        yield
    finally:
        _WORKERS.reset(token)


def current_workers() -> int:
    """How many processes the runs use here (1 outside :func:`parallel_runs`)."""
    return _WORKERS.get()


def _set_threads(threads: int) -> None:
    """A worker's start: its share of the cores, so the workers do not oversubscribe them."""
    import torch

    torch.set_num_threads(threads)


def map_runs(
    fn: Callable[..., T], jobs: Sequence[tuple[Any, ...]], on_done: Callable[[int, T], Any] | None = None
) -> list[T]:
    """``[fn(*job) for job in jobs]``, over :func:`current_workers` processes; ``on_done(index, result)`` is called
    in this process as each job finishes (in finishing order). ``fn`` must be a module-level function and the
    jobs and results picklable. The first failure stops the rest and is raised here."""
    workers = min(current_workers(), len(jobs))
    if workers <= 1:
        results = []
        for index, job in enumerate(jobs):
            results.append(fn(*job))
            if on_done is not None:
                on_done(index, results[-1])
        return results
    import torch

    threads = max(1, torch.get_num_threads() // workers)
    out: dict[int, T] = {}
    context = get_context("spawn")  # a fork would copy this process's torch threads and locks
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_set_threads, initargs=(threads,)) as pool:
        futures = {pool.submit(fn, *job): index for index, job in enumerate(jobs)}
        pending = set(futures)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    result = future.result()  # a worker's error is raised here, and the rest are cancelled below
                    out[futures[future]] = result
                    if on_done is not None:
                        on_done(futures[future], result)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)  # what has not started never starts
            raise
    return [out[index] for index in range(len(jobs))]
