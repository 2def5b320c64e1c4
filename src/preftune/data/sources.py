"""Loading rows: files, local folders and Hub names.

:func:`load_rows` returns plain rows (:class:`RawRows`) and the name used in error messages.
Every failure is a one-line :class:`~preftune.errors.PreftuneError`: a missing file (named),
bytes that are not UTF-8 (file and line), a malformed or truncated JSON line (file and line), a
CSV record of the wrong width, a folder with no data file, a missing split, an empty dataset, a
Hub dataset that cannot be reached. With ``skip_invalid`` the lines and records that can be
dropped are dropped and counted instead (see :mod:`preftune.data.readers`).
"""

from __future__ import annotations

from pathlib import Path

from preftune.data.files import COMPRESSIONS, KINDS, first_line, load_file, quiet_datasets, suffixes
from preftune.data.folders import load_folder, pick_split
from preftune.data.rows import RawRows
from preftune.data.validation import one_line
from preftune.errors import PreftuneError

__all__ = ["RawRows", "load_rows"]


def _looks_like_path(source: str) -> bool:
    data_suffix, compression = suffixes(Path(source))
    return data_suffix in KINDS or compression in COMPRESSIONS or source.startswith((".", "/", "~")) or "\\" in source


def _load_hub(name: str, split: str | None) -> RawRows:
    import datasets

    try:
        with quiet_datasets():
            table = datasets.load_dataset(name, split=split)
    except Exception as err:
        raise PreftuneError(
            one_line(
                f"'{name}' is not a local file or folder, and it could not be loaded from the Hugging Face Hub "
                f"({first_line(err, root=False)})"
            )
        ) from None
    table = pick_split(table, name, split)
    return RawRows(name, table.to_list(), list(table.column_names))


def load_rows(source: str | Path, split: str | None = None, *, skip_invalid: bool = False) -> RawRows:
    """Read the rows of a data file, a local folder or a Hub dataset.

    Args:
        source: a ``.jsonl``/``.json``/``.csv``/``.tsv``/``.parquet`` file (``.gz``, ``.bz2``, ``.xz``
            compressed or not); a folder of such files or one written by ``save_to_disk`` (see
            :mod:`preftune.data.folders`); otherwise a Hub dataset name, loaded with
            ``datasets.load_dataset`` (set ``HF_HUB_OFFLINE=1`` to fail at once without a network).
        split: the split of a folder or Hub dataset (default: 'train', or the only one).
        skip_invalid: drop lines that are not UTF-8 or not JSON, and CSV records of the wrong
            width, counting them in ``RawRows.dropped``, instead of raising at the first.

    Raises:
        PreftuneError: one line, naming the file (and line, where there is one).
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.is_dir():
        raw = load_folder(path, split, skip_invalid=skip_invalid)
    elif path.is_file():
        if split not in (None, "train"):
            raise PreftuneError(f"{path.name}: a single file has no splits; data.split={split} applies to folders")
        raw = load_file(path, skip_invalid=skip_invalid)
    elif isinstance(source, Path) or _looks_like_path(text):
        raise PreftuneError(f"no such file: {path}")
    else:
        raw = _load_hub(text, split)
    if not raw.rows and not raw.dropped:
        raise PreftuneError(f"{raw.name}: empty dataset (no rows)")
    return raw
