"""One data file -> rows: the reader is chosen by the file's suffix.

JSON, JSON Lines and CSV/TSV go through :mod:`preftune.data.readers` (line-aware errors, rows
numbered by line); Parquet through ``datasets``. Compressed text files (``.gz``, ``.bz2``, ``.xz``)
are read as the file inside.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from preftune.data.readers import read_csv, read_json
from preftune.data.rows import RawRows
from preftune.data.validation import one_line
from preftune.errors import PreftuneError

# File suffix -> the kind of file it holds.
KINDS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "tsv"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


def suffixes(path: Path) -> tuple[str, str | None]:
    """(data suffix, compression suffix or None), e.g. ``('.jsonl', '.gz')``."""
    parts = [s.lower() for s in path.suffixes]
    compression = parts.pop() if parts and parts[-1] in COMPRESSIONS else None
    return (parts[-1] if parts else ""), compression


def kind_of(path: Path) -> str | None:
    """``"json"``, ``"csv"``, ``"tsv"``, ``"parquet"``, or None for a file that holds no rows we read."""
    return KINDS.get(suffixes(path)[0])


def first_line(err: BaseException, *, root: bool = True) -> str:
    """A one-line description of an exception (of the root of its cause chain when ``root``)."""
    while root and (err.__cause__ is not None or err.__context__ is not None):
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """Silence ``datasets``' own error log while it reads: its failure becomes our one line instead."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_parquet(path: Path, name: str) -> RawRows:
    import datasets

    try:
        with quiet_datasets():
            table = datasets.load_dataset("parquet", data_files=str(path), split="train")
    except Exception as err:  # datasets/pyarrow raise many types; say it in one line
        raise PreftuneError(one_line(f"{name}: cannot be read as parquet ({first_line(err)})")) from None
    return RawRows(name, table.to_list(), list(table.column_names))


def load_file(path: Path, name: str | None = None, *, skip_invalid: bool = False) -> RawRows:
    """The rows of one data file.

    Args:
        path: the file.
        name: how errors name it (default: the file name).
        skip_invalid: drop lines or records that cannot be read (counted in ``RawRows.dropped``).

    Raises:
        PreftuneError: one line naming the file (and line, where there is one).
    """
    name = name or path.name
    data_suffix, compression = suffixes(path)
    kind = KINDS.get(data_suffix)
    if kind is None:
        known = ", ".join(sorted({*KINDS, ".jsonl.gz"}))
        raise PreftuneError(f"{name}: unknown file type '{data_suffix or path.suffix}' (expected one of {known})")
    if path.stat().st_size == 0:
        raise PreftuneError(f"{name}: empty dataset (the file is empty)")
    if compression == ".zst":
        raise PreftuneError(f"{name}: .zst files are not read; decompress it first (zstd -d)")
    if kind == "parquet":
        return _read_parquet(path, name)
    if kind == "json":
        return read_json(path, name, compression, skip_invalid=skip_invalid)
    return read_csv(path, name, compression, skip_invalid=skip_invalid, delimiter="\t" if kind == "tsv" else None)
