"""Atomic publication of cache folders."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from preftune.modeling import atomic_directory, cache_root
from tests.helpers import concurrently


def test_cache_root_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PREFTUNE_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("PREFTUNE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "preftune"


def test_folder_appears_complete_or_not_at_all(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_directory(dest) as tmp:
        (tmp / "half.bin").write_text("x")
        raise RuntimeError("crash while writing")
    assert not dest.exists() and list(tmp_path.iterdir()) == []
    with atomic_directory(dest) as tmp:
        (tmp / "weights.bin").write_text("complete")
        assert not dest.exists()
    assert (dest / "weights.bin").read_text() == "complete" and list(tmp_path.iterdir()) == [dest]


def test_racing_writers_leave_one_complete_folder(tmp_path: Path) -> None:
    dest = tmp_path / "model"
    barrier = threading.Barrier(4)

    def write(i: int) -> None:
        with atomic_directory(dest) as tmp:
            (tmp / "a.txt").write_text(str(i))
            (tmp / "b.txt").write_text(str(i))
            barrier.wait()

    assert not concurrently(write, 4)
    assert (dest / "a.txt").read_text() == (dest / "b.txt").read_text()
    assert list(tmp_path.iterdir()) == [dest]
