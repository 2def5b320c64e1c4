"""A local folder -> rows of one split.

Two kinds of folder are read:

- a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (it holds
  ``state.json`` or ``dataset_dict.json``), read with ``datasets.load_from_disk``;
- a folder of data files (``.jsonl``, ``.json``, ``.csv``, ``.tsv``, ``.parquet``, compressed or
  not, in subfolders too). Their split follows ``datasets``' naming convention: a split word in
  the file names (``train``/``training``; ``validation``/``valid``/``val``/``dev``;
  ``test``/``testing``/``eval``/``evaluation``, between separators such as ``-._`` or digits),
  else in the folder names, else every file is ``train``. Each file is read by
  :func:`preftune.data.files.load_file`, so errors name the file and line.

Anything else in the folder (a README, code, images) is ignored; a folder with no data file at
all is refused with a line saying what it holds. A ``DatasetDict`` gives its ``train`` split,
or its only one; otherwise the split must be chosen (``data.split=NAME``).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from preftune.data.files import first_line, kind_of, load_file, quiet_datasets
from preftune.data.rows import RawRows, column_names, fill_columns
from preftune.data.validation import one_line
from preftune.errors import PreftuneError

SPLIT_WORDS = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
    "eval": "test",
    "evaluation": "test",
}
SPLIT_ORDER = ("train", "validation", "test")
SEPARATORS = re.compile(r"[-._ 0-9]+")


def choose_split(splits: list[str], name: str, split: str | None, hint: str = "") -> str:
    """``split``, else 'train', else the only split; a one-line error naming the splits otherwise."""
    shown = ", ".join(splits)
    if split is None:
        if "train" in splits or len(splits) == 1:
            return "train" if "train" in splits else splits[0]
        raise PreftuneError(f"{name}: no 'train' split (it has {shown}); pick one with data.split=NAME{hint}")
    if split not in splits:
        raise PreftuneError(f"{name}: no split '{split}' (it has {shown}); set data.split to one of them{hint}")
    return split


def pick_split(table: Any, name: str, split: str | None, hint: str = "") -> Any:
    """One split of a ``DatasetDict`` (see :func:`choose_split`); a ``Dataset`` as it is."""
    import datasets

    if not isinstance(table, datasets.DatasetDict):
        return table
    return table[choose_split(list(table), name, split, hint)]


def _visible_files(path: Path) -> list[Path]:
    """Files under ``path``, relative to it, hidden ones (and those in hidden folders) left out."""
    found = []
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if file.is_file() and not any(part.startswith((".", "__")) for part in relative.parts):
            found.append(relative)
    return found


def describe(files: list[Path], most: int = 6) -> str:
    """What a folder holds, briefly: ``README.md, model.py, 12 .png files``."""
    if not files:
        return "nothing"
    kinds: dict[str, list[Path]] = {}
    for file in files:
        kinds.setdefault(file.suffix.lower() or file.name, []).append(file)
    ordered = sorted(kinds.items(), key=lambda item: -len(item[1]))
    parts = [f"{len(group)} {suffix} files" if len(group) > 1 else group[0].as_posix() for suffix, group in ordered]
    return ", ".join(parts[:most]) + (", ..." if len(parts) > most else "")


def _split_words(text: str) -> list[str]:
    return [SPLIT_WORDS[word] for word in SEPARATORS.split(text.lower()) if word in SPLIT_WORDS]


def _splits_of(name: str, files: list[Path]) -> dict[str, list[Path]]:
    """Data files by split (see the module docstring)."""
    for words_of in (lambda f: _split_words(f.name), lambda f: [w for p in f.parts[:-1] for w in _split_words(p)]):
        named = {file: words_of(file) for file in files}
        if any(named.values()):
            unnamed = [file for file, words in named.items() if not words]
            if unnamed:
                raise PreftuneError(
                    f"{name}: {unnamed[0]} has no split in its name (train, validation, test) while other files do; "
                    "rename it, or point data.train at one file"
                )
            by_split: dict[str, list[Path]] = {split: [] for split in SPLIT_ORDER}
            for file, words in named.items():
                by_split[words[0]].append(file)
            return {split: files for split, files in by_split.items() if files}
    return {"train": files}


def _load_data_files(path: Path, split: str | None, skip_invalid: bool) -> RawRows:
    files = _visible_files(path)
    data = [file for file in files if kind_of(file) is not None]
    if not data:
        raise PreftuneError(
            f"{path.name}: a folder with no data files (it holds {describe(files)}); expected .jsonl, .json, .csv, "
            ".tsv or .parquet files, or a folder written by save_to_disk"
        )
    by_split = _splits_of(path.name, data)
    first = next(iter(by_split.values()))
    hint = f", or name its file (data.train={path.name}/{first[0]})" if len(first) == 1 else ""
    chosen = by_split[choose_split(list(by_split), path.name, split, hint)]
    kinds = sorted({kind_of(file) or "" for file in chosen})
    if len(kinds) > 1:
        raise PreftuneError(
            f"{path.name}: the files of one split are of several types ({', '.join(kinds)}); point data.train at one"
        )
    parts = [load_file(path / file, f"{path.name}/{file.as_posix()}", skip_invalid=skip_invalid) for file in chosen]
    if len(parts) == 1:
        return parts[0]
    rows = [row for part in parts for row in part.rows]
    origins = [part.origin(i) for part in parts for i in range(len(part.rows))]
    dropped: Counter[str] = Counter()
    for part in parts:
        dropped.update(part.dropped)
    columns = column_names(rows)
    return RawRows(path.name, fill_columns(rows, columns), columns, origins, dict(dropped))


def load_folder(path: Path, split: str | None = None, *, skip_invalid: bool = False) -> RawRows:
    """The rows of one split of a local folder (see the module docstring)."""
    if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        return _load_data_files(path, split, skip_invalid)
    import datasets

    try:
        with quiet_datasets():
            table = datasets.load_from_disk(str(path))
    except Exception as err:
        raise PreftuneError(one_line(f"{path.name}: cannot be read as a dataset folder ({first_line(err)})")) from None
    if isinstance(table, datasets.DatasetDict):
        hint = f", or name its folder (data.train={path.name}/{next(iter(table), '')})"
        table = pick_split(table, path.name, split, hint)
    elif split not in (None, "train"):
        raise PreftuneError(f"{path.name}: a dataset with one split; data.split={split} names none")
    return RawRows(path.name, table.to_list(), list(table.column_names))
