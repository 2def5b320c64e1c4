"""Where preftune keeps what it builds once (converted models, reference log-probs), and how it
writes there safely.

Everything lives under one root: ``$PREFTUNE_CACHE`` if set, else ``$XDG_CACHE_HOME/preftune``,
else ``~/.cache/preftune``. A folder is published with :func:`atomic_directory`: written in full
under a temporary name beside its destination, then renamed, so a reader never sees half a
checkpoint and two processes racing to build the same folder both end with one complete copy.
Single files are written the same way by :mod:`preftune.files` (``write_atomic`` and
``atomic_write_target`` are importable from here too).

Temporary files and folders are created private (``mkstemp`` makes them 0600, ``mkdtemp`` 0700);
everything published here is given the mode a plain ``open()`` or ``mkdir()`` would have given it
under the process's umask (:func:`chmod_as_created`), so outputs stay readable where the user's
umask says they should be.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from preftune.files import atomic_write_target, created_mode, write_atomic

__all__ = [
    "CACHE_ENV",
    "atomic_directory",
    "atomic_write_target",
    "cache_root",
    "chmod_as_created",
    "models_dir",
    "write_atomic",
]

CACHE_ENV = "PREFTUNE_CACHE"


def cache_root() -> Path:
    """The root of preftune's cache (not created here)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "preftune"


def models_dir() -> Path:
    """``<cache root>/models``: converted and generated checkpoints, one folder each."""
    return cache_root() / "models"


@contextmanager
def atomic_directory(dest: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``dest``; on success rename it to ``dest``.

    If ``dest`` appeared meanwhile (another process won the race), the temporary folder is
    discarded and the existing ``dest`` kept: both complete, so either will do. On an
    exception nothing is published and the temporary folder is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    chmod_as_created(tmp)  # mkdtemp makes it private; the published folder is an ordinary one
    try:
        yield tmp
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def chmod_as_created(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode ``open()`` (0o666) or ``mkdir()`` (0o777) would have given it under the umask.

    For files and folders made by ``tempfile``, which are private whatever the umask says.
    """
    os.chmod(path, created_mode(directory=os.path.isdir(path)))
