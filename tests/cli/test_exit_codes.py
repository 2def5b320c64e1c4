"""Exit codes that tell (0 done, 2 refused, 3 incomplete) and one-line errors before any judge call,
against a real OpenAI-protocol server process on 127.0.0.1 (or a port where nothing listens)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from preftune.cli.main import main
from preftune.errors import EXIT_INCOMPLETE, EXIT_USAGE, IncompleteRun
from preftune.judging.api import UNREACHABLE_CALLS, ApiJudge
from tests.judging.servers import config, dead_url, openai_server

FAST = "model=length-judge,max_retries=0,backoff_s=0.01,timeout_s=5,concurrency=2"


def _rows(path: Path, prompts: int = 4) -> Path:
    rows = [
        {"prompt": f"Say something {i}", "completions": [f"{'x' * (4 + 3 * k + i)} {k}" for k in range(3)]}
        for i in range(prompts)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _labelled(path: Path, pairs: int = 6) -> Path:
    rows = [
        {"instruction": f"q{i}", "input": "", "response1": "a" * (i + 2), "response2": "b" * 4}
        | {f"annotator{k}": "1" for k in (1, 2, 3)}
        for i in range(pairs)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _completions(folder: Path) -> tuple[Path, Path]:
    outputs, baseline = folder / "outputs.jsonl", folder / "baseline.jsonl"
    outputs.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": "o" * (i + 3)}) + "\n" for i in range(6)))
    baseline.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": "b" * 5}) + "\n" for i in range(6)))
    return outputs, baseline


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "preftune.cli.main", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def _win_rate(outputs: Path, baseline: Path, judge: str, *extra: str) -> list[str]:
    """``preftune win-rate`` of ``outputs`` against ``baseline``, with few bootstrap resamples."""
    argv = ["win-rate", f"outputs={outputs}", f"baseline={baseline}", f"judge={judge}"]
    return [*argv, *extra, "eval.lc_bootstrap=5", "eval.bootstrap=50"]


def _last_line(stderr: str, starts: str) -> str:
    """The run's last line, which must start with ``starts``; no traceback anywhere."""
    assert "Traceback" not in stderr, stderr
    line = stderr.strip().splitlines()[-1]
    assert line.startswith(starts), stderr
    return line


# --- item 2: exit codes that tell ---


@pytest.mark.slow
def test_rank_against_a_dead_port_stops_early_with_exit_3(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.jsonl", prompts=40)
    out = tmp_path / "ranked.jsonl"
    spec = f"api:{dead_url()},{FAST.replace('max_retries=0', 'max_retries=2')}"
    began = time.monotonic()
    done = _cli("rank", f"input={rows}", f"judge={spec}", f"out={out}")
    assert time.monotonic() - began < 60
    assert done.returncode == EXIT_INCOMPLETE == 3
    line = _last_line(done.stderr, "incomplete: api judge: ")
    assert "could not be reached" in line and "stopped early" in line and "rerun" in line
    assert not out.exists()  # nothing half-ranked is written


def test_an_unreachable_endpoint_stops_the_judge_after_a_few_calls_not_every_one() -> None:
    judge = ApiJudge(config(dead_url(), max_retries=1, concurrency=1))
    with pytest.raises(IncompleteRun, match="could not be reached"):
        judge.judge([f"q{i}" for i in range(50)], [("long answer", "short")] * 50)
    assert judge.requests == UNREACHABLE_CALLS * 2  # each of those calls tried twice; the other 47 never sent
    with pytest.raises(IncompleteRun):  # and it stays stopped: no more waiting on a dead endpoint
        judge.judge(["q"], [("a", "b")])
    assert judge.requests == UNREACHABLE_CALLS * 2


@pytest.mark.slow
def test_rank_with_failed_calls_exits_3_and_a_rerun_asks_only_those(tmp_path: Path) -> None:
    rows = _rows(tmp_path / "rows.jsonl")
    out, store = tmp_path / "ranked.jsonl", tmp_path / "ranked.verdicts.sqlite"
    # every third request body fails its first attempt (HTTP 500), and this judge does not retry
    with openai_server("--faults", "500,none,none", "--fault-attempts", "1") as (url, stats):
        args = [
            "rank",
            f"input={rows}",
            "method=round_robin",
            f"judge=api:{url},{FAST}",
            f"out={out}",
            f"pairs={tmp_path / 'pairs.jsonl'}",
        ]
        first = _cli(*args)
        with sqlite3.connect(store) as db:
            answered = db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]
        asked = stats()["requests"]
        second = _cli(*args)
        asked_again = stats()["requests"] - asked
    assert first.returncode == EXIT_INCOMPLETE, first.stderr
    line = _last_line(first.stderr, "incomplete: ")
    assert "of 12 comparisons failed" in line and "only calls without a verdict are asked" in line
    assert out.exists() and answered < 24  # 4 prompts × 3 comparisons × 2 orders
    assert second.returncode == 0, second.stderr
    assert asked_again == 24 - answered  # the rerun asked exactly the calls that had no verdict


@pytest.mark.slow
def test_judge_eval_and_win_rate_with_failed_calls_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _labelled(tmp_path / "labelled.jsonl")
    outputs, baseline = _completions(tmp_path)
    with openai_server("--faults", "500,none", "--fault-attempts", "99") as (url, _):
        spec = f"api:{url},{FAST}"
        code = main(["judge", "eval", f"judge={spec}", f"data.eval={data}", f"out={tmp_path / 'r.json'}"])
        assert code == EXIT_INCOMPLETE
        line = _last_line(capsys.readouterr().err, "incomplete: ")
        assert "of 6 comparisons failed" in line and "with store=FILE, only the failed ones" in line
        assert (tmp_path / "r.json").is_file()  # the report is written all the same
        store = tmp_path / "w.sqlite"
        code = main(_win_rate(outputs, baseline, spec, f"store={store}"))
        assert code == EXIT_INCOMPLETE
        line = _last_line(capsys.readouterr().err, "incomplete: ")
        assert "of 6 comparisons failed" in line and f"the store {store} answers the rest" in line


@pytest.mark.slow
def test_runs_with_every_call_answered_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _labelled(tmp_path / "labelled.jsonl")
    outputs, baseline = _completions(tmp_path)
    rows = _rows(tmp_path / "rows.jsonl", prompts=2)
    with openai_server() as (url, _):
        spec = f"api:{url},{FAST}"
        assert main(["judge", "eval", f"judge={spec}", f"data.eval={data}"]) == 0
        assert main(_win_rate(outputs, baseline, spec)) == 0
        assert main(["rank", f"input={rows}", f"judge={spec}", f"out={tmp_path / 'r.jsonl'}"]) == 0
    assert "incomplete" not in capsys.readouterr().err


@pytest.mark.slow
def test_evaluate_generate_with_failed_calls_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "eval"
    with openai_server("--faults", "500", "--fault-attempts", "99") as (url, _):
        code = main(
            [
                "evaluate",
                "--generate",
                "model.name=tiny-random",
                "prompts=bundled:hh-harmless",
                "limit=2",
                "eval.max_new_tokens=4",
                "eval.lc_bootstrap=5",
                "eval.bootstrap=50",
                f'eval.judges=[longer, "api:{url},{FAST}"]',
                f"out={out}",
            ]
        )
    assert code == EXIT_INCOMPLETE
    line = _last_line(capsys.readouterr().err, "incomplete: ")
    assert "2 of 4 comparisons failed" in line and "win rates" in line
    assert (out / "report.json").is_file()


def _silent_model(folder: Path) -> Path:
    """The tiny model, changed so that its first token is always the end of the turn: every completion empty.

    With the attention and MLP outputs zeroed, the last hidden state is the input token's embedding;
    the final norm keeps only dimension 0, which every embedding has positive, and the end-of-turn
    token's embedding is 1000 times larger there: its logit dwarfs every other.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from preftune.data.tokenize import end_of_turn_ids
    from preftune.modeling.tiny import tiny_model_path

    source = tiny_model_path()
    model, tokenizer = AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        embeddings = model.model.embed_tokens.weight
        embeddings[:, 0] = 1.0
        for stop in end_of_turn_ids(tokenizer):
            embeddings[stop, 0] = 1000.0
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_generate_with_completions_still_empty_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say hi."}\n{"prompt": "Count to three."}\n')
    out = tmp_path / "generated.jsonl"
    model = _silent_model(tmp_path / "silent")
    args = [
        "generate",
        f"prompts={prompts}",
        f"model.name={model}",
        "sampling.n=2",
        "sampling.temperature=0",
        "sampling.max_new_tokens=4",
        "sampling.backend=hf",
        "model.device=cpu",
        f"out={out}",
    ]
    assert main(args) == EXIT_INCOMPLETE
    line = _last_line(capsys.readouterr().err, "incomplete: ")
    assert line.startswith("incomplete: 4 completions stayed empty after 3 redraws"), line
    assert "again with another seed=N into another out=FILE" in line, line
    assert len(out.read_text().splitlines()) == 2  # the rows are written, as the line says


# --- item 3: one line, exit 2, before any call ---


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, object]]:
    with openai_server() as running:
        yield running


def _setup(tmp_path: Path, case: str) -> tuple[list[str], Path | None]:
    """Arguments for ``rank`` that must be refused, and a file that must stay as it was."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "notes.txt").write_text("not a database, " * 200)
    options = {"out": str(tmp_path / "ranked.jsonl"), "judge": "JUDGE"}
    kept = None
    if case == "out is a folder":
        options["out"] = str(tmp_path / "folder")
    elif case == "out under a file":
        options["out"] = str(tmp_path / "notes.txt" / "ranked.jsonl")
    elif case == "store not sqlite":
        options["store"] = kept = tmp_path / "notes.txt"
    elif case == "store is a folder":
        options["store"] = str(tmp_path / "folder")
    elif case == "pairs is out":
        options["pairs"] = options["out"]
    elif case == "api without model":
        options["judge"] = "api:URL"
    return [f"{k}={v}" for k, v in options.items()], kept


@pytest.mark.slow
@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("out is a folder", "error: out="),
        ("out under a file", "is not a folder"),
        ("store not sqlite", "not a verdict store"),
        ("store is a folder", "error: store="),
        ("pairs is out", "name the same file"),
        ("api without model", "model=NAME"),
    ],
)
def test_rank_refuses_in_one_line_before_any_call(tmp_path: Path, server, capsys, case: str, says: str) -> None:
    url, stats = server
    before = stats()["requests"]
    args, kept = _setup(tmp_path, case)
    content = kept.read_bytes() if kept else None
    spec = f"api:{url}" if case == "api without model" else f"api:{url},{FAST}"
    args = [f"judge={spec}" if a in ("judge=JUDGE", "judge=api:URL") else a for a in args]
    assert main(["rank", f"input={_rows(tmp_path / 'rows.jsonl')}", *args]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err, err
    assert stats()["requests"] == before  # not one call was made
    if kept:
        assert kept.read_bytes() == content


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["judge", "eval", "judge=longer", "data.eval=DATA", "store=NOTES"], "not a verdict store"),
        (["judge", "eval", "judge=longer", "data.eval=DATA", "out=NOTES/r.json"], "is not a folder"),
        (["win-rate", "outputs=OUT", "baseline=BASE", "judge=longer", "store=NOTES"], "not a verdict store"),
        (["win-rate", "outputs=OUT", "baseline=BASE", "judge=longer", "out=NOTES/r.json"], "is not a folder"),
        (["win-rate", "outputs=OUT", "baseline=BASE", "judge=longer", "out=OUT"], "name the same file"),
        (["generate", "prompts=DATA", "out=NOTES/g.jsonl"], "is not a folder"),
        (
            [
                "evaluate",
                "--generate",
                "model.name=tiny-random",
                "prompts=bundled:hh-harmless",
                "eval.judges=[longer]",
                "out=NOTES/eval",
            ],
            "no folder can be made there",
        ),
    ],
)
def test_other_commands_refuse_bad_outputs_in_one_line(tmp_path: Path, no_model, capsys, command, says) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, " * 200)
    outputs, baseline = _completions(tmp_path)
    paths = {
        "DATA": str(_labelled(tmp_path / "labelled.jsonl")),
        "NOTES": str(notes),
        "OUT": str(outputs),
        "BASE": str(baseline),
    }
    args = []
    for item in command:
        key, _, value = item.partition("=")
        args.append(f"{key}={paths.get(value) or value.replace('NOTES', str(notes))}" if value else item)
    assert main(args) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and says in err and "\n" not in err, err
    assert notes.read_text() == "not a database, " * 200
