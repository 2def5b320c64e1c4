"""Output paths checked before a command works, so that a run does not end in a traceback after
its judge calls or its generation: a file named where a folder is, a folder under a file, a
folder that cannot be written in, two outputs on one file."""

from __future__ import annotations

from pathlib import Path

from preftune.errors import PreftuneError
from preftune.files import unwritable_reason


def check_output_file(path: Path, flag: str) -> None:
    """Refuse an output file that cannot be written: a folder, a path under a file, a read-only folder."""
    if path.is_dir():
        raise PreftuneError(f"{flag}={path} is a folder; give a file name")
    _check_writable(path.parent, path, flag)


def check_output_folder(path: Path, flag: str) -> None:
    """Refuse an output folder that cannot be made or written in: an existing file, a path under a file."""
    if path.exists() and not path.is_dir():
        raise PreftuneError(f"{flag}={path} is a file; give a folder")
    _check_writable(path, path, flag)


def check_distinct(paths: dict[str, Path | None]) -> None:
    """Refuse two of the named paths (flag → path; None: not given) that are one file."""
    seen: dict[Path, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        key = path.expanduser().resolve()
        if key in seen:
            raise PreftuneError(f"{flag} and {seen[key]} name the same file {path}; give each its own")
        seen[key] = flag


def _check_writable(folder: Path, path: Path, flag: str) -> None:
    if reason := unwritable_reason(folder):
        raise PreftuneError(f"{flag}={path}: {reason}")
