"""An on-policy `preftune train` run that SIGKILLs itself right after a given step (its checkpoint
written: the checkpoint hook runs before callbacks), for `test_online.py`'s kill-and-resume test.

    python online_kill_worker.py OUT KILL_AFTER [key=value ...]
"""

from __future__ import annotations

import os
import signal
import sys

from preftune.cli.config import load_config
from preftune.run.train import run_training


def main() -> None:
    out, kill_after, overrides = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

    def kill(step: int, stats: dict) -> None:
        if step == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up, no hook's close: as an OOM kill

    run_training(load_config(None, [*overrides, f"output_dir={out}"]), callbacks=[kill])


if __name__ == "__main__":
    main()
