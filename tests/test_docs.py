"""The documentation's code runs: every ```python block of the README and docs/ is executed (each
in a fresh interpreter, on the tiny model), and every `preftune ...` command of a ```bash block
parses with the command-line parser (its subcommand and options exist), so a renamed option or a
stale snippet fails here rather than in a user's terminal."""

from __future__ import annotations

import json
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
def test_documented_commands_read_their_settings(
    where: str, argv: list[str], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each documented command parses, and its settings read as the command reads them before any
    work: every key exists and takes its value, in today's spelling (an old flag's note fails it);
    train's config resolves and passes the checks that run before a model loads."""
    from preftune.cli.keys import resolve
    from preftune.cli.main import _parse, build_parser

    monkeypatch.chdir(ROOT)  # the examples/ files the pages name
    try:
        args = _parse(build_parser(), argv)
    except SystemExit as stop:
        assert stop.code == 0, f"{where}: `preftune {' '.join(argv)}` does not parse"
        return
    if hasattr(args, "command_settings"):
        resolve(args)
    elif args.command == "train":
        _check_train(args)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: ")]
    assert not notes, f"{where}: `preftune {' '.join(argv)}` uses an old spelling: {notes}"


def _check_train(args) -> None:
    from preftune.cli.config import load_config
    from preftune.run.checks import check

    config_path, overrides = args.config, list(args.overrides)
    if config_path is not None and "=" in str(config_path) and not config_path.exists():
        overrides.insert(0, str(config_path))
        config_path = None
    if any(path is not None and not path.exists() for path in (config_path, args.trl)):
        return  # a user's own file, named in the text (my_config.yaml, dpo_config.yaml)
    config = load_config(args.trl or config_path, overrides, trl=args.trl is not None)
    check(config)


def test_the_pages_hold_code_to_check() -> None:
    assert len(blocks("python")) >= 2 and len(preftune_commands()) >= 20


#: Settings appended to a documented command so that it runs in seconds on the tiny model; the
#: documented settings themselves are kept (a later key=value wins only where the same key repeats).
SIZES = {
    "generate": ["model.name=tiny-random", "sampling.n=2", "sampling.max_new_tokens=6"],
    "train": ["model.name=tiny-random", "optim.max_steps=1", "output_dir=run", "trackers=[]"],
}


@pytest.mark.slow
def test_the_readme_data_pipeline_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's generate -> rank -> train block, run as written on the tiny model (SIZES added);
    a command whose input file the user downloads first (PandaLM's test set) is left out."""
    from preftune.cli.main import main

    monkeypatch.chdir(tmp_path)
    block = next(code for where, code in blocks("bash") if where.startswith("README") and "preftune rank" in code)
    ran = []
    for line in block.splitlines():
        argv = shlex.split(line.split(" #")[0])[1:]
        downloaded = [a for a in argv if a.startswith("data.eval=") and not Path(a.split("=", 1)[1]).exists()]
        if not argv or downloaded:
            continue
        assert main([*argv, *SIZES.get(argv[0], [])]) == 0, line
        ran.append(argv[0])
    assert ran == ["generate", "rank", "train"]
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    assert len(pairs) > 16  # the 8 held out and a batch of 8: at most one pair per prompt
    assert all(len(_text(p["chosen"])) > len(_text(p["rejected"])) for p in pairs)  # judge=longer
    assert (tmp_path / "run" / "summary.md").is_file()


def _text(response) -> str:
    return response if isinstance(response, str) else response[-1]["content"]
