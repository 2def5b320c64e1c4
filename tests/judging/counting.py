"""A function judge for the resume test: longer is better, every call counted in a file, and the process
killed by SIGKILL after ``PREFTUNE_TEST_KILL_AFTER`` calls (no clean-up, as an OOM kill)."""

from __future__ import annotations

import os
import signal
from pathlib import Path


def judge(prompt: str, first: str, second: str) -> int:
    log = Path(os.environ["PREFTUNE_TEST_CALLS"])
    with log.open("a", encoding="utf-8") as f:
        f.write(f"{prompt}|{first}|{second}\n")
    kill_after = int(os.environ.get("PREFTUNE_TEST_KILL_AFTER", "0"))
    if kill_after and len(log.read_text(encoding="utf-8").splitlines()) >= kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return 0 if len(first) >= len(second) else 1
