"""JSON, JSON Lines and CSV files read line by line, so that every problem names its line.

These text formats are read with :mod:`json` and :mod:`csv` rather than ``datasets``: a table
library fails on the whole file (and logs its own message besides ours), while a reader that
walks the lines can name the bad one, drop it under ``skip_invalid``, and keep row numbers that
match the lines. Every cell of a CSV file stays text (an empty cell is ``""``), as typed.

- **JSON Lines**: one object per line; row N is the row on line N (blank lines are skipped but
  keep their number). A malformed last line that ends mid-object is reported as truncated.
- **JSON**: an array of objects (row N is item N); or one object holding a single list of rows
  under one key (``{"data": [...], "version": 1}``: the rows are the list's items). Any other
  single object is refused; a ``.json`` file holding one object per line is read as JSON Lines.
- **CSV**: the delimiter is read from the header (``,`` ``;`` tab or ``|``: the one that splits
  it into the most columns, ``,`` on a tie); row N is the N-th record below the header.

With ``skip_invalid`` a line that is not UTF-8, a malformed JSON line and a CSV record with the
wrong number of cells are dropped and counted in :attr:`RawRows.dropped`; without it each is a
one-line :class:`~preftune.errors.PreftuneError`. A JSON document (array or object) is one unit:
an error in it cannot be dropped and always raises.
"""

from __future__ import annotations

import csv
import gzip
import itertools
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from preftune.data.examples import Origin
from preftune.data.rows import RawRows, column_names, fill_columns
from preftune.data.validation import one_line, type_name
from preftune.errors import PreftuneError

DELIMITERS = (",", ";", "\t", "|")
NOT_UTF8 = "line: bytes that are not UTF-8"
MALFORMED = "line: malformed JSON"
TRUNCATED = "line: cut short (the last line ends mid-object)"
NOT_OBJECT = "line: not a JSON object"
WRONG_CELLS = "row: wrong number of cells"


class Unreadable(Exception):
    """A line or record that cannot be read: the reason it is counted under, and the one-line message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def open_binary(path: Path, compression: str | None) -> Any:
    """``path`` opened for reading bytes, decompressed on the fly."""
    if compression == ".gz":
        return gzip.open(path, "rb")
    if compression == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    if compression == ".xz":
        import lzma

        return lzma.open(path, "rb")
    return path.open("rb")


def raw_lines(path: Path, compression: str | None) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes of the line), decompressed."""
    with open_binary(path, compression) as handle:
        yield from enumerate(handle, start=1)


def not_utf8(where: str, raw: bytes, err: UnicodeDecodeError) -> Unreadable:
    """The problem of a line that is not UTF-8, showing the bytes where decoding failed."""
    return Unreadable(
        NOT_UTF8,
        f"{where}: bytes that are not UTF-8 ({err.reason} at byte {err.start} of the line: "
        f"{raw[err.start : err.start + 4]!r}); save the file as UTF-8",
    )


def decode(name: str, number: int, raw: bytes) -> str:
    """The text of a line (a UTF-8 byte-order mark on line 1 removed); :class:`Unreadable` if not UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise not_utf8(f"{name} line {number}", raw, err) from None
    return text.removeprefix("\ufeff") if number == 1 else text


def json_problem(err: json.JSONDecodeError) -> str:
    """``Expecting ',' delimiter at column 30`` (json's own message ends some with "at")."""
    return f"{err.msg.removesuffix(' at')} at column {err.colno}"


def malformed(where: str, text: str, err: json.JSONDecodeError, *, last: bool) -> Unreadable:
    """The error for a line that is not JSON; says so when the line stops mid-object."""
    message = f"{where}: malformed JSON ({json_problem(err)})"
    # An unterminated string or an error at the very end means the text stops before its object does.
    cut = err.msg.startswith("Unterminated string") or err.pos >= len(text.rstrip())
    if cut and last:
        return Unreadable(TRUNCATED, f"{message}; it is the last line and ends mid-object: the file looks truncated")
    if cut:
        return Unreadable(MALFORMED, f"{message}; the line ends mid-object (JSON Lines holds one object per line)")
    return Unreadable(MALFORMED, message)


def _json_lines(name: str, lines: list[tuple[int, bytes]], *, skip_invalid: bool) -> RawRows:
    """Rows of a JSON Lines file: row N is line N."""
    filled = [(number, raw) for number, raw in lines if raw.strip()]
    last = filled[-1][0] if filled else 0
    rows: list[dict[str, Any]] = []
    origins: list[Origin] = []
    dropped: Counter[str] = Counter()
    for number, raw in filled:
        where = f"{name} line {number}"
        try:
            text = decode(name, number, raw)
            try:
                item = json.loads(text)
            except json.JSONDecodeError as err:
                raise malformed(where, text, err, last=number == last) from None
            if not isinstance(item, dict):
                raise Unreadable(NOT_OBJECT, f"{where}: expected a JSON object (one row), got {type_name(item)}")
        except Unreadable as problem:
            if not skip_invalid:
                raise PreftuneError(one_line(str(problem))) from None
            dropped[problem.reason] += 1
            continue
        rows.append(item)
        origins.append(Origin(name, number))
    columns = column_names(rows)
    return RawRows(name, fill_columns(rows, columns), columns, origins, dict(dropped))


def _document(name: str, lines: list[tuple[int, bytes]]) -> Any:
    """The one JSON value of the file; a one-line error naming the line where it breaks."""
    try:
        text = "".join(decode(name, number, raw) for number, raw in lines)
    except Unreadable as problem:
        raise PreftuneError(str(problem)) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise PreftuneError(f"{name} line {err.lineno}: malformed JSON ({json_problem(err)})") from None


def _rows_of_object(name: str, data: dict[str, Any]) -> tuple[list[Any], str]:
    """The list of rows held by a JSON object under one key (``{"data": [...]}``), and that key."""
    keys = [key for key, value in data.items() if isinstance(value, list) and value and isinstance(value[0], dict)]
    if len(keys) == 1:
        return data[keys[0]], keys[0]
    shown = ", ".join(repr(key) for key in list(data)[:8]) + (", ..." if len(data) > 8 else "")
    if keys:
        lists = ", ".join(repr(key) for key in keys)
        raise PreftuneError(f"{name}: one JSON object holding several lists of rows ({lists}); keep one per file")
    raise PreftuneError(
        f"{name}: one JSON object (keys {shown}), not a list of rows; "
        "write a list [{...}, {...}] or one object per line (JSON Lines)"
    )


def _json_items(name: str, items: list[Any], *, skip_invalid: bool, where: str = "item") -> RawRows:
    rows: list[dict[str, Any]] = []
    origins: list[Origin] = []
    dropped: Counter[str] = Counter()
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            if not skip_invalid:
                raise PreftuneError(f"{name} {where} {number}: expected a JSON object (one row), got {type_name(item)}")
            dropped[f"{where}: not a JSON object"] += 1
            continue
        rows.append(item)
        origins.append(Origin(name, number))
    columns = column_names(rows)
    return RawRows(name, fill_columns(rows, columns), columns, origins, dict(dropped))


def _is_one_object(lines: list[tuple[int, bytes]]) -> bool:
    """For a ``.json`` file starting with ``{``: whether it is one object rather than JSON Lines.

    JSON Lines when its first line is a whole JSON value and more lines follow; one object
    otherwise (pretty-printed over several lines, or a single line).
    """
    filled = [raw for _, raw in lines if raw.strip()]
    try:
        json.loads(filled[0].decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return True
    return len(filled) == 1


def read_json(path: Path, name: str, compression: str | None, *, skip_invalid: bool = False) -> RawRows:
    """Rows of a JSON Lines file, a JSON array, or a JSON object holding one list of rows (see the module)."""
    lines = list(raw_lines(path, compression))
    head = next((raw.lstrip() for _, raw in lines if raw.strip()), b"").removeprefix(b"\xef\xbb\xbf")
    if head.startswith(b"["):
        data = _document(name, lines)
        return _json_items(name, data if isinstance(data, list) else [data], skip_invalid=skip_invalid)
    is_json = path.name.lower().removesuffix(compression or "").endswith(".json")
    if is_json and head.startswith(b"{") and _is_one_object(lines):
        items, key = _rows_of_object(name, _document(name, lines))
        return _json_items(name, items, skip_invalid=skip_invalid, where=f"'{key}' item")
    return _json_lines(name, lines, skip_invalid=skip_invalid)


def delimiter_of(header: str) -> str:
    """The CSV delimiter that splits the header into the most columns (``,`` on a tie)."""
    counts = {d: len(next(csv.reader([header], delimiter=d), [])) for d in DELIMITERS}
    return max(DELIMITERS, key=lambda d: counts[d])  # max keeps the first of equals: ","


class _Decoded:
    """The lines of a file as text for :mod:`csv`, remembering which were not UTF-8 (decoded with U+FFFD)."""

    def __init__(self, path: Path, compression: str | None) -> None:
        self.lines = raw_lines(path, compression)
        self.bad: dict[int, tuple[bytes, UnicodeDecodeError]] = {}

    def __iter__(self) -> Iterator[str]:
        for number, raw in self.lines:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                self.bad[number] = (raw, err)
                text = raw.decode("utf-8", errors="replace")
            yield text.removeprefix("\ufeff") if number == 1 else text


def _header(name: str, text: Iterator[str], decoded: _Decoded, delimiter: str | None) -> tuple[list[str], str, str]:
    """(column names, delimiter, the header line) of a CSV file."""
    first = next(text, "")
    if 1 in decoded.bad:
        raise PreftuneError(str(not_utf8(f"{name} line 1 (the header)", *decoded.bad[1])))
    delimiter = delimiter or delimiter_of(first)
    header = next(csv.reader([first], delimiter=delimiter), [])
    twice = [column for column, n in Counter(header).items() if n > 1]
    if twice:
        raise PreftuneError(f"{name}: the header names column '{twice[0]}' more than once")
    return header, delimiter, first


def read_csv(
    path: Path, name: str, compression: str | None, *, skip_invalid: bool = False, delimiter: str | None = None
) -> RawRows:
    """Rows of a CSV (or TSV) file, every cell as text; row N is the N-th record below the header."""
    csv.field_size_limit(2**31 - 1)  # long responses exceed the default 128 KiB a cell
    decoded = _Decoded(path, compression)
    text = iter(decoded)
    header, delimiter, first = _header(name, text, decoded, delimiter)
    reader = csv.reader(itertools.chain([first], text), delimiter=delimiter)
    next(reader, None)
    rows: list[dict[str, Any]] = []
    origins: list[Origin] = []
    dropped: Counter[str] = Counter()
    end, number = reader.line_num, 0
    try:
        for record in reader:
            start, end = end + 1, reader.line_num
            if not "".join(record).strip() and len(record) <= 1:
                continue  # a blank line
            number += 1
            try:
                _check_record(name, record, header, delimiter, (start, end, number), decoded)
            except Unreadable as problem:
                if not skip_invalid:
                    raise PreftuneError(one_line(str(problem))) from None
                dropped[problem.reason] += 1
                continue
            rows.append(dict(zip(header, record, strict=True)))
            origins.append(Origin(name, number))
    except csv.Error as err:
        raise PreftuneError(one_line(f"{name} line {reader.line_num}: cannot be read as CSV ({err})")) from None
    if not rows and not dropped:
        raise PreftuneError(f"{name}: empty dataset (no rows below the header)")
    return RawRows(name, rows, header, origins, dict(dropped))


def _check_record(
    name: str, record: list[str], header: list[str], delimiter: str, place: tuple[int, int, int], decoded: _Decoded
) -> None:
    """An :class:`Unreadable` for a record on lines ``start..end`` that is not UTF-8 or has the wrong width."""
    start, end, number = place
    bad = next((line for line in range(start, end + 1) if line in decoded.bad), None)
    if bad is not None:
        raise not_utf8(f"{name} line {bad} (row {number})", *decoded.bad[bad])
    if len(record) != len(header):
        shown = {"\t": "tab"}.get(delimiter, f"'{delimiter}'")
        raise Unreadable(
            WRONG_CELLS,
            f"{name} line {start} (row {number}): {len(record)} cells, the header has {len(header)} "
            f"(delimiter {shown})",
        )
