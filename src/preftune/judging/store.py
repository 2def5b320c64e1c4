"""A verdict cache on SQLite, so that an interrupted ranking resumes with no call repeated.

One row per ordered call: (judge identity, sha256 of the prompt, of the first completion, of the
second) → the raw verdict (FIRST/SECOND) and when it was written. Only hashes of texts are stored,
never the texts. Each write is its own committed transaction in a WAL journal, so a process
killed with SIGKILL loses at most the calls in flight; two processes may share one file (writers
wait on a busy timeout rather than fail), and threads of one process share one connection under a
lock.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from preftune.judging.base import FIRST, SECOND

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verdicts (
    judge TEXT NOT NULL,
    prompt_sha256 TEXT NOT NULL,
    first_sha256 TEXT NOT NULL,
    second_sha256 TEXT NOT NULL,
    verdict INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (judge, prompt_sha256, first_sha256, second_sha256)
)
"""


def text_hash(text: str) -> str:
    """The hex sha256 of a text's UTF-8 bytes (lone surrogates passed through)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class VerdictStore:
    """Raw verdicts of ordered judge calls, keyed by judge identity and text hashes."""

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit, so every put is committed on its own.
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process kill
        self._db.execute(_SCHEMA)

    @staticmethod
    def _key(identity: str, prompt: str, first: str, second: str) -> tuple[str, str, str, str]:
        return identity, text_hash(prompt), text_hash(first), text_hash(second)

    def get(self, identity: str, prompt: str, first: str, second: str) -> int | None:
        """The stored verdict of ``judge(prompt, first, second)``, or None if never answered."""
        with self._lock:
            row = self._db.execute(
                "SELECT verdict FROM verdicts WHERE judge = ? AND prompt_sha256 = ? AND first_sha256 = ?"
                " AND second_sha256 = ?",
                self._key(identity, prompt, first, second),
            ).fetchone()
        return None if row is None else int(row[0])

    def put(self, identity: str, prompt: str, first: str, second: str, verdict: int) -> None:
        """Store (and commit) one answered call; only FIRST or SECOND — a failure is not a verdict."""
        if verdict not in (FIRST, SECOND):
            raise ValueError(f"only FIRST ({FIRST}) or SECOND ({SECOND}) is stored, not {verdict!r}")
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?, ?, ?)",
                (*self._key(identity, prompt, first, second), int(verdict), time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> VerdictStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
