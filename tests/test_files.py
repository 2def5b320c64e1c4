"""preftune.files: whole files or none, no temporary left behind, concurrent writers apart."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from preftune.files import atomic_write_target, write_atomic, write_json_atomic
from tests.helpers import concurrently


def test_write_atomic_replaces_whole_files_and_cleans_up_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a.csv"
    assert write_atomic(target, b"old") == target
    write_atomic(str(target), "new", fsync=False)
    assert target.read_bytes() == b"new"

    def broken(*_: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"half")
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["a.csv"]


def test_parents_are_made_and_json_is_indented(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "deeper" / "record.json"
    write_json_atomic(target, {"path": tmp_path, "n": 1})
    assert json.loads(target.read_text(encoding="utf-8")) == {"path": str(tmp_path), "n": 1}
    assert target.read_text(encoding="utf-8").startswith('{\n  "path"')


def test_a_write_target_is_a_fresh_file_beside_its_destination(tmp_path: Path) -> None:
    dest = tmp_path / "table.safetensors"
    first, second = atomic_write_target(dest), atomic_write_target(dest)
    assert first != second and first.parent == second.parent == tmp_path
    assert first.read_bytes() == b"" and not dest.exists()


def test_concurrent_atomic_writes_never_collide(tmp_path: Path) -> None:
    dest = tmp_path / "state.json"

    def write(i: int) -> None:
        for j in range(25):
            write_atomic(dest, json.dumps({"writer": i, "write": j}))

    assert not concurrently(write, 4)
    assert json.loads(dest.read_text())["write"] == 24 and list(tmp_path.iterdir()) == [dest]  # no temporary left


def test_strict_json_turns_non_finite_floats_into_null_at_any_depth() -> None:
    import json
    import math

    from preftune.files import strict_json

    value = {"a": math.nan, "b": [1.0, math.inf, (-math.inf, 2)], "c": {"d": math.nan, "e": "x"}}
    assert strict_json(value) == {"a": None, "b": [1.0, None, [None, 2]], "c": {"d": None, "e": "x"}}
    json.dumps(strict_json(value), allow_nan=False)  # strict JSON: raises on a NaN left behind
