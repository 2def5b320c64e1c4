"""Files and folders written atomically get the mode a plain open() or mkdir() would give under the umask,
not the private mode of the temporary files and folders they are written through."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from preftune.files import atomic_write_target, current_umask, write_atomic, write_json_atomic
from preftune.modeling.cache import atomic_directory
from preftune.run.report import plot_curves


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask(request: pytest.FixtureRequest):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


@pytest.mark.parametrize(
    ("umask", "file_mode", "dir_mode"),
    [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
    indirect=["umask"],
)
def test_atomic_writes_follow_the_umask(tmp_path: Path, umask: int, file_mode: int, dir_mode: int) -> None:
    assert current_umask() == umask
    written = {
        "json": tmp_path / "run_config.json",
        "text": tmp_path / "summary.md",
        "bytes": tmp_path / "blob.bin",
        "target": tmp_path / "table.safetensors",
        "png": tmp_path / "curves.png",
    }
    write_json_atomic(written["json"], {"a": 1})
    write_atomic(written["text"], "# summary\n")
    write_atomic(written["bytes"], b"\x00\x01")
    tmp = atomic_write_target(written["target"])  # the reference cache's way: a writer fills it, then a rename
    tmp.write_bytes(b"table")
    os.replace(tmp, written["target"])
    plot_curves([{"step": 1, "loss": 1.0}], [], written["png"], "curves")  # matplotlib writes the target
    with atomic_directory(tmp_path / "model") as folder:
        (folder / "config.json").write_text("{}")
    for kind, path in written.items():
        assert _mode(path) == file_mode, kind
    assert _mode(tmp_path / "model") == dir_mode
    assert _mode(tmp_path / "model" / "config.json") == file_mode
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in written.values()), "model"])
