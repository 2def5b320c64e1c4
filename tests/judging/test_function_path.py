"""A `function:MODULE:FN` labeller or judge is found in the working directory, as a user expects of
a file beside the data, and an import error says where it looked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from preftune.errors import PreftuneError
from preftune.judging.functions import load_function


def test_a_module_in_the_working_directory_is_found(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "my_rewards_for_test.py").write_text("def length(prompt, response):\n    return len(response)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    fn = load_function("my_rewards_for_test:length", "reward function")
    assert fn("q", "abcd") == 4
    with pytest.raises(
        PreftuneError,
        match=r"^reward function 'no_such_module_x:f': cannot import module .* "
        r"looked up on PYTHONPATH and in the working directory",
    ):
        load_function("no_such_module_x:f", "reward function")


def test_the_console_script_finds_it_too(tmp_path: Path) -> None:
    """`preftune` run from the folder that holds the module (not on its sys.path as a console script)."""
    (tmp_path / "my_judge_for_test.py").write_text("def first(prompt, a, b):\n    return 0\n")
    (tmp_path / "rows.jsonl").write_text('{"prompt": "q", "completions": ["a", "bb", "ccc"]}\n')
    exe = Path(sys.executable).with_name("preftune")
    result = subprocess.run(
        [str(exe), "rank", "input=rows.jsonl", "judge=function:my_judge_for_test:first", "out=r.jsonl"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "r.jsonl").is_file()
