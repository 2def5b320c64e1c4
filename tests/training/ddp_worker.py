"""``torchrun ... ddp_worker.py KEY=VALUE...``: one process of a distributed training run.

The same as ``preftune train KEY=VALUE...``, with the test objective terms of
:mod:`tests.training.terms` registered first (as a user's script would register its own).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for `tests.training`

from preftune.cli.config import load_config
from preftune.run.train import run_training
from tests.training import terms


def main(argv: list[str]) -> int:
    run_training(load_config(None, argv), callbacks=[terms.track_step])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
