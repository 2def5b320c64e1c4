"""The installed ``preftune`` command, run as a user runs it (a real subprocess)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from preftune.cli.analyze import split_top_level
from preftune.errors import PreftuneError

EXE = shutil.which("preftune") or str(Path(sys.executable).parent / "preftune")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
def test_help_lists_every_command_with_one_line() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("analyze", "objectives"):
        assert command in result.stdout
    assert "--debug" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("args", [["analyze", "gradients", "--help"], ["objectives", "--help"], ["analyze", "--help"]])
def test_every_command_has_help(args: list[str]) -> None:
    result = run(*args)
    assert result.returncode == 0
    assert "usage: preftune" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["bogus"], "invalid choice: 'bogus'"),
        (["objectives", "dpoo"], "did you mean 'dpo'"),
        (["objectives", "dpo(beta=0)"], "beta must be > 0"),
        (["analyze", "gradients", "objectives=mle,,dpo"], "objectives=mle,,dpo has an empty item"),
        (["analyze", "gradients", "objectives=dpo,exmat"], "did you mean 'exmate'"),
        (["analyze", "gradients", "--bogus"], "--bogus is not an option of preftune analyze gradients"),
        (["analyze", "gradients", "bogus=1"], "setting does not exist: 'bogus'"),
    ],
)
def test_errors_are_one_line_with_non_zero_exit(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and message in lines[0]


@pytest.mark.slow
def test_debug_shows_the_traceback() -> None:
    result = run("--debug", "objectives", "dpoo")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "SpecError" in result.stderr


@pytest.mark.slow
def test_objectives_lists_every_term_and_checks_an_expression() -> None:
    listing = run("objectives")
    assert listing.returncode == 0
    for name in ("mle", "ul", "mate", "exmate", "dpo", "ipo", "hinge", "bcr", "dpop", "reinforce", "rwr", "bon_neg"):
        assert name in listing.stdout
    checked = run("objectives", "dpo + 0.5*exmate(lam=0.1)")
    assert checked.returncode == 0
    assert "0.5*exmate(lam=0.1, average=True)" in checked.stdout
    assert "reference" in checked.stdout


def test_objective_lists_split_on_top_level_commas_only() -> None:
    assert split_top_level("mle, dpo(beta=0.2, average=True),dpo+exmate") == [
        "mle",
        "dpo(beta=0.2, average=True)",
        "dpo+exmate",
    ]
    with pytest.raises(PreftuneError):
        split_top_level("mle,")
