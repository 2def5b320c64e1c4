"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Every file preftune publishes (run records, summaries, plots, reports, cached tables) is written
here: in full under a unique temporary name beside its destination, then renamed onto it with
:func:`os.replace`. Concurrent writers never share a temporary name, and a failed write leaves
the destination as it was and no temporary file behind.

Temporary files are created private (``mkstemp`` makes them 0600); the published file is given
the mode a plain ``open()`` would have given it under the process's umask, so outputs stay
readable where the user's umask says they should be.

A leaf like :mod:`preftune.errors`: anything may import it; it imports nothing of preftune.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def atomic_write_target(dest: str | os.PathLike[str]) -> Path:
    """A fresh temporary file beside ``dest`` (empty, with the umask's mode), to fill then ``os.replace`` onto it.

    For writers that need a file name (safetensors, ``torch.save``, matplotlib). The caller
    removes it when the write fails. Its name ends in ``.partial``: writers that choose a format
    by the extension must be told the format. Writers that truncate an existing file keep its mode.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    try:
        os.fchmod(fd, created_mode(directory=False))
    finally:
        os.close(fd)
    return Path(name)


def write_atomic(dest: str | os.PathLike[str], data: str | bytes, *, fsync: bool = True) -> Path:
    """Write ``data`` (text as UTF-8) to ``dest`` through a unique temporary file beside it, then rename.

    The parent folder is created if needed; the file gets the mode a plain ``open()`` would give
    it. ``fsync`` (default) flushes the data to disk before the rename, so a crash cannot publish
    a file whose contents are still in flight. Returns ``dest`` as a :class:`~pathlib.Path`.
    """
    dest = Path(dest)
    tmp = atomic_write_target(dest)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def strict_json(value: Any) -> Any:
    """``value`` with every NaN and ±inf float as ``None``, recursively (tuples as lists): JSON that
    strict parsers read (Python's ``json`` would write ``NaN``)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def write_json_atomic(dest: str | os.PathLike[str], payload: Any) -> Path:
    """Write ``payload`` as indented JSON (anything else as its ``str``) to ``dest`` atomically."""
    return write_atomic(dest, json.dumps(payload, indent=2, default=str))


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


def created_mode(*, directory: bool) -> int:
    """The mode ``open()`` (0o666) or ``mkdir()`` (0o777) gives a new file or folder under the umask."""
    return (0o777 if directory else 0o666) & ~current_umask()


def unwritable_reason(folder: str | os.PathLike[str]) -> str | None:
    """Why ``folder`` cannot be made (as ``mkdir -p`` would) or written in, or None when it can: the
    nearest path at or above it that exists (a dangling link included) is not a folder, or refuses a
    write. The write is tried (a temporary folder made and removed): ``os.access`` says yes to root
    everywhere, a read-only file system included. Callers check outputs with it before any work."""
    existing = Path(folder).expanduser().absolute()
    while not existing.exists() and not existing.is_symlink() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a folder"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".preftune-write-test-", dir=existing))
    except OSError as err:
        return f"cannot write in {existing} ({err.strerror})"
    return None
