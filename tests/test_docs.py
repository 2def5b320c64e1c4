"""The documentation's code runs: every ```python block of the README and docs/ is executed (each
in a fresh interpreter, on the tiny model), and every `preftune ...` command of a ```bash block
parses with the command-line parser (its subcommand and options exist), so a renamed option or a
stale snippet fails here rather than in a user's terminal."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(language: str) -> list[tuple[str, str]]:
    """``(where, code)`` of every fenced block in ``language`` (``where``: page and line)."""
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == language:
                line = text[: match.start()].count("\n") + 1
                found.append((f"{page.relative_to(ROOT)}:{line}", match.group(2)))
    return found


def preftune_commands() -> list[tuple[str, list[str]]]:
    """Each ``preftune ...`` command line of the bash blocks (continuations joined, comments cut)."""
    commands = []
    for where, code in blocks("bash"):
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if not line.startswith("preftune ") or "$(" in line:
                continue
            commands.append((where, shlex.split(line)[1:]))
    return commands


@pytest.mark.parametrize(("where", "code"), blocks("python"), ids=[w for w, _ in blocks("python")])
def test_python_blocks_run(where: str, code: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, f"{where}:\n{result.stderr[-2000:]}"


@pytest.mark.parametrize(("where", "argv"), preftune_commands(), ids=[" ".join(a[:2]) for _, a in preftune_commands()])
def test_documented_commands_parse(where: str, argv: list[str]) -> None:
    from preftune.cli.main import _parse, build_parser

    parser = build_parser()
    try:
        _parse(parser, argv)
    except SystemExit as stop:
        assert stop.code == 0, f"{where}: `preftune {' '.join(argv)}` does not parse"


def test_the_pages_hold_code_to_check() -> None:
    assert len(blocks("python")) >= 2 and len(preftune_commands()) >= 20
