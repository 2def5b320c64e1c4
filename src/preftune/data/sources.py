"""Loading rows: files, ``datasets`` folders and Hub names, read with the ``datasets`` library.

:func:`load_rows` returns plain rows (``list[dict]``) and the name used in error messages.
Every failure is a one-line :class:`~preftune.errors.PreftuneError`: a missing file (named), bytes
that are not UTF-8 (file and line), a malformed JSON line (file and line), an empty dataset, a
Hub dataset that cannot be reached.

When ``datasets`` cannot build a table from a JSON file whose every line parses (e.g. a field is
a string in one row and a list in another), the rows are read with :mod:`json` instead, so that
validation can name the offending row rather than fail on the whole file.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from preftune.data.validation import one_line
from preftune.errors import PreftuneError

# File suffix -> the `datasets` packaged builder that reads it.
BUILDERS = {".jsonl": "json", ".json": "json", ".ndjson": "json", ".parquet": "parquet", ".csv": "csv"}
COMPRESSIONS = (".gz", ".bz2", ".xz", ".zst")


@dataclass
class RawRows:
    """Rows as read, before any format is applied.

    Attributes:
        name: how error messages name the source (a file name or a dataset name).
        rows: one dict per row, in file order (row ``i`` is ``rows[i - 1]``).
        columns: the column names, in table order.
    """

    name: str
    rows: list[dict[str, Any]]
    columns: list[str] = field(default_factory=list)


def _suffixes(path: Path) -> tuple[str, str | None]:
    """(data suffix, compression suffix or None), e.g. ``('.jsonl', '.gz')``."""
    suffixes = [s.lower() for s in path.suffixes]
    compression = suffixes.pop() if suffixes and suffixes[-1] in COMPRESSIONS else None
    return (suffixes[-1] if suffixes else ""), compression


def _looks_like_path(source: str) -> bool:
    data_suffix, compression = _suffixes(Path(source))
    return data_suffix in BUILDERS or compression is not None or source.startswith((".", "/", "~")) or "\\" in source


def _first_line(err: BaseException, *, root: bool = True) -> str:
    """A one-line description of an exception (of the root of its cause chain when ``root``)."""
    while root and (err.__cause__ is not None or err.__context__ is not None):
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".rstrip(": ")


def _open_binary(path: Path, compression: str | None) -> Any:
    if compression == ".gz":
        return gzip.open(path, "rb")
    if compression == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    if compression == ".xz":
        import lzma

        return lzma.open(path, "rb")
    return path.open("rb")


def _lines(path: Path, compression: str | None) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line); a PreftuneError at the first line that is not UTF-8."""
    with _open_binary(path, compression) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise PreftuneError(
                    f"{path.name} line {number}: bytes that are not UTF-8 ({err.reason} at byte {err.start} "
                    f"of the line: {raw[err.start : err.start + 4]!r}); save the file as UTF-8"
                ) from None


def _read_json_rows(path: Path, compression: str | None) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file or a JSON array, read with :mod:`json`; one-line errors with line numbers."""
    lines = list(_lines(path, compression))
    first = next((text for _, text in lines if text.strip()), "")
    if first.lstrip().startswith("["):  # one JSON document: an array of rows
        try:
            data = json.loads("".join(text for _, text in lines))
        except json.JSONDecodeError as err:
            raise PreftuneError(
                f"{path.name} line {err.lineno}: malformed JSON ({err.msg}, column {err.colno})"
            ) from None
        items = list(enumerate(data, start=1)) if isinstance(data, list) else [(1, data)]
        where = "item"
    else:
        items = []
        for number, text in lines:
            if not text.strip():
                continue
            try:
                items.append((number, json.loads(text)))
            except json.JSONDecodeError as err:
                raise PreftuneError(
                    f"{path.name} line {number}: malformed JSON ({err.msg}, column {err.colno})"
                ) from None
        where = "line"
    for number, item in items:
        if not isinstance(item, dict):
            raise PreftuneError(
                f"{path.name} {where} {number}: expected a JSON object (one row), got {type(item).__name__}"
            )
    return [item for _, item in items]


def _diagnose(path: Path, builder: str, compression: str | None, err: Exception) -> list[dict[str, Any]]:
    """Find why ``datasets`` could not read ``path``: raise a precise error, or return rows read another way."""
    if builder == "json":
        return _read_json_rows(path, compression)
    if builder == "csv":
        lines = [text for _, text in _lines(path, compression) if text.strip()]  # raises at a non-UTF-8 line
        if len(lines) <= 1:
            raise PreftuneError(f"{path.name}: empty dataset (no rows below the header)")
    raise PreftuneError(one_line(f"{path.name}: cannot be read as {builder} ({_first_line(err)})")) from None


def _csv_options(path: Path, compression: str | None) -> dict[str, Any]:
    """Read every CSV column as text, empty cells as empty strings (not numbers, not nulls)."""
    import datasets

    with _open_binary(path, compression) as handle:
        header = next(csv.reader([handle.readline().decode("utf-8")]), [])
    features = datasets.Features({name: datasets.Value("string") for name in header})
    return {"features": features, "keep_default_na": False}


def _load_file(path: Path, split: str | None) -> RawRows:
    import datasets

    data_suffix, compression = _suffixes(path)
    builder = BUILDERS.get(data_suffix)
    if builder is None:
        known = ", ".join(sorted({*BUILDERS, *(f".jsonl{c}" for c in COMPRESSIONS[:1])}))
        raise PreftuneError(f"{path.name}: unknown file type '{data_suffix or path.suffix}' (expected one of {known})")
    if path.stat().st_size == 0:
        raise PreftuneError(f"{path.name}: empty dataset (the file is empty)")
    if split not in (None, "train"):
        raise PreftuneError(f"{path.name}: a single file has one split ('train'), not '{split}'")
    try:
        options = _csv_options(path, compression) if builder == "csv" else {}
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
        rows, columns = table.to_list(), list(table.column_names)
    except PreftuneError:
        raise
    except Exception as err:  # datasets/pyarrow/pandas raise many types; diagnose them in one line
        rows = _diagnose(path, builder, compression, err)
        columns = list(dict.fromkeys(key for row in rows for key in row))
    return RawRows(path.name, rows, columns)


def _pick_split(table: Any, name: str, split: str | None) -> Any:
    """One split of a ``DatasetDict`` (``split``, else 'train', else the only one)."""
    import datasets

    if not isinstance(table, datasets.DatasetDict):
        return table
    splits = list(table)
    if split is None:
        split = "train" if "train" in splits else (splits[0] if len(splits) == 1 else None)
        if split is None:
            raise PreftuneError(f"{name}: several splits {splits}; choose one with split=")
    if split not in table:
        raise PreftuneError(f"{name}: no split '{split}'; found {splits}")
    return table[split]


def _load_folder(path: Path, split: str | None) -> RawRows:
    import datasets

    try:
        if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
            table = datasets.load_from_disk(str(path))  # save_to_disk output
        else:
            table = datasets.load_dataset(str(path))  # a folder of data files
    except Exception as err:
        raise PreftuneError(one_line(f"{path.name}: cannot be read as a dataset folder ({_first_line(err)})")) from None
    table = _pick_split(table, path.name, split)
    return RawRows(path.name, table.to_list(), list(table.column_names))


def _load_hub(name: str, split: str | None) -> RawRows:
    import datasets

    try:
        table = datasets.load_dataset(name, split=split)
    except Exception as err:
        raise PreftuneError(
            one_line(
                f"'{name}' is not a local file or folder, and it could not be loaded from the Hugging Face Hub "
                f"({_first_line(err, root=False)})"
            )
        ) from None
    table = _pick_split(table, name, split)
    return RawRows(name, table.to_list(), list(table.column_names))


def load_rows(source: str | Path, split: str | None = None) -> RawRows:
    """Read the rows of a data file, a local ``datasets`` folder or a Hub dataset.

    Args:
        source: a ``.jsonl``/``.json``/``.jsonl.gz``/``.parquet``/``.csv`` file; a folder written
            by ``Dataset.save_to_disk`` (or holding data files); otherwise a Hub dataset name,
            loaded with ``datasets.load_dataset`` (set ``HF_HUB_OFFLINE=1`` to fail at once
            where there is no network).
        split: the split of a folder or Hub dataset (default: 'train', or the only one).

    Raises:
        PreftuneError: one line, naming the file (and line, where there is one).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        raw = _load_folder(path, split)
    elif path.is_file():
        raw = _load_file(path, split)
    elif isinstance(source, Path) or _looks_like_path(text):
        raise PreftuneError(f"no such file: {path}")
    else:
        raw = _load_hub(text, split)
    if not raw.rows:
        raise PreftuneError(f"{raw.name}: empty dataset (no rows)")
    return raw
