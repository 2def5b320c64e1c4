"""A verdict cache on SQLite, so that an interrupted ranking resumes with no call repeated.

One row per ordered call: (judge identity, sha256 of the prompt, of the first completion, of the
second) → the raw verdict (FIRST/SECOND, or TIE from a judge whose format has one) and when it
was written. Only hashes of texts are stored, never the texts. Each write is its own committed
transaction in a WAL journal, so a process killed with SIGKILL loses at most the calls in flight;
two processes may share one file (writers wait on a busy timeout rather than fail), and threads of
one process share one connection under a lock. A path that cannot hold a store (a folder, a file
that is not SQLite, another program's database) is refused in one line when the store is opened,
before any judge call."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from pathlib import Path

from preftune.errors import PreftuneError
from preftune.judging.base import ANSWERED, FIRST, SECOND, TIE

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
_COLUMNS = {"judge", "prompt_sha256", "first_sha256", "second_sha256", "verdict", "created"}


def text_hash(text: str) -> str:
    """The hex sha256 of a text's UTF-8 bytes (lone surrogates passed through)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class VerdictStore:
    """Raw verdicts of ordered judge calls, keyed by judge identity and text hashes."""

    def __init__(self, path: str | os.PathLike[str], timeout_s: float = 60.0):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so every put is committed on its own.
            self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as error:
            raise PreftuneError(f"verdict store {self.path}: cannot be opened ({error})") from None
        try:
            self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
            self._refuse_foreign()  # before the first write: another program's file is left as it was
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable across a process kill
            self._db.execute(_SCHEMA)
        except sqlite3.Error as error:  # "file is not a database", a read-only file
            self._db.close()
            raise PreftuneError(
                f"verdict store {self.path}: not a verdict store ({error}); "
                "give a new file name or one written by preftune"
            ) from None
        except PreftuneError:
            self._db.close()
            raise

    def _refuse_foreign(self) -> None:
        """Refuse a SQLite file with tables but not ours (``verdicts`` with our columns)."""
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(verdicts)")}
        if tables and not _COLUMNS <= columns:
            raise PreftuneError(
                f"verdict store {self.path}: a SQLite file of another program (tables "
                f"{', '.join(sorted(tables))}); give a new file name or one written by "
                "preftune"
            )

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
        """Store (and commit) one answered call; only FIRST, SECOND or TIE — a failure is not a verdict."""
        if verdict not in ANSWERED:
            raise ValueError(f"only FIRST ({FIRST}), SECOND ({SECOND}) or TIE ({TIE}) is stored, not {verdict!r}")
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


def failed_comparisons(
    failed: int, total: int, left_out_of: str, store: str | os.PathLike[str] | None, store_flag: str | None = "store"
) -> str:
    """The line a command ends with when ``failed`` of ``total`` comparisons got no verdict: how many,
    and what a rerun asks (only the failed calls when the verdicts are kept in ``store``; ``store_flag``
    the option that keeps them, None for a command without one)."""
    if store is not None:
        rerun = f"a rerun of the same command asks only the failed calls again (the store {store} answers the rest)"
    elif store_flag is not None:
        rerun = f"a rerun asks every call again (with {store_flag}=FILE, only the failed ones)"
    else:
        rerun = "a rerun asks every call again"
    return f"{failed} of {total} comparisons failed (no verdict) and are left out of {left_out_of}; {rerun}"
