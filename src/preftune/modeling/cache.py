"""Where preftune keeps what it builds once (converted models, reference log-probs), and how it
writes there safely.

Everything lives under one root: ``$PREFTUNE_CACHE`` if set, else ``$XDG_CACHE_HOME/preftune``,
else ``~/.cache/preftune``. A folder is published with :func:`atomic_directory`: written in full
under a temporary name beside its destination, then renamed, so a reader never sees half a
checkpoint and two processes racing to build the same folder both end with one complete copy.
Single files are written the same way (:func:`write_atomic`).

Temporary files and folders are created private (``mkstemp`` makes them 0600, ``mkdtemp`` 0700);
everything published here is given the mode a plain ``open()`` or ``mkdir()`` would have given it
under the process's umask (:func:`chmod_as_created`), so outputs stay readable where the user's
umask says they should be.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CACHE_ENV = "PREFTUNE_CACHE"
_UMASK_LOCK = threading.Lock()


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


def atomic_write_target(dest: Path) -> Path:
    """A fresh temporary file beside ``dest`` (empty, with the umask's mode), to write then ``os.replace``
    onto it. Writers that truncate an existing file keep its mode."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        os.fchmod(fd, _created_mode(directory=False))
    finally:
        os.close(fd)
    return Path(name)


def write_atomic(dest: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` (text is UTF-8) to ``dest`` through a unique temporary file beside it, then rename.

    A reader sees the old file or the new one, never half of one; concurrent writers do not share
    a temporary name; the file gets the mode a plain ``open()`` would give it. Returns ``dest``.
    """
    dest = Path(dest)
    tmp = atomic_write_target(dest)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not publish a file whose data is still in flight
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def chmod_as_created(path: str | os.PathLike[str]) -> None:
    """Give ``path`` the mode ``open()`` (0o666) or ``mkdir()`` (0o777) would have given it under the umask.

    For files and folders made by ``tempfile``, which are private whatever the umask says.
    """
    os.chmod(path, _created_mode(directory=os.path.isdir(path)))


def current_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux: /proc/self/status)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    # Elsewhere the only way is to set it and set it back: a brief window, under a lock for our own threads.
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _created_mode(*, directory: bool) -> int:
    return (0o777 if directory else 0o666) & ~current_umask()
