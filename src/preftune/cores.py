"""How many CPU cores a thread pool should take here: :func:`free_cores` (a leaf: imports nothing of preftune)."""

from __future__ import annotations

import os


def free_cores() -> int:
    """The cores this process may run on, less the recent load (at least 1).

    llama.cpp's thread pool slows sharply when it has more threads than free cores (a 1-token
    request took 0.5-0.8 s with 1 thread and 3-4 s with 2 on a 2-core machine busy with one other
    process), so busy cores are left to whoever keeps them busy.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    try:
        busy = int(os.getloadavg()[0] + 0.5)
    except OSError:  # no load average on this platform
        busy = 0
    return max(1, cores - busy)
