"""``preftune generate``: prompt sources, N completions per prompt, resuming after a kill, refusals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from preftune.cli.main import main
from preftune.errors import PreftuneError
from preftune.generation import command
from preftune.generation.command import KILL_HOOK, Settings, generate_file, open_output
from preftune.generation.prompts import encode_prompt, load_prompts, prompt_key, read_prompts
from preftune.generation.sampling import SamplingConfig
from preftune.judging.rank_file import read_candidates
from preftune.modeling import load_model, load_tokenizer

MT_BENCH = Path("/work/shared/data/mt-bench-questions.jsonl")
CONFIG = SamplingConfig(n=2, temperature=0.7, max_new_tokens=4, batch_size=4, seed=0)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny-random")


@pytest.fixture(scope="module")
def model():
    return load_model("tiny-random")


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    return jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Question number {i}?"} for i in range(6)])


# ---- reading prompts -------------------------------------------------------------------------------


@pytest.mark.skipif(not MT_BENCH.is_file(), reason="MT-Bench questions not in /work/shared/data")
def test_mt_bench_first_turns() -> None:
    first = json.loads(MT_BENCH.read_text(encoding="utf-8").splitlines()[0])
    prompts = read_prompts(MT_BENCH, limit=3)
    assert len(prompts) == 3
    assert prompts[0] == [{"role": "user", "content": first["turns"][0]}]


def test_prompt_kinds_and_dedupe(tmp_path: Path) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    source = jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"prompt": "Hello"},
            {"prompt": messages},
            {"instruction": "Add", "input": "1 + 1"},
            {"prompt": "Hello"},
            {"prompt": "Why?", "chosen": "a", "rejected": "b"},
            {"turns": ["First", "Second"]},
        ],
    )
    found = load_prompts(source)
    assert found.prompts == ["Hello", messages, "Add\n\n1 + 1", "Why?", [{"role": "user", "content": "First"}]]
    assert found.duplicates == 1 and "1 duplicate" in str(found)
    assert read_prompts(source, limit=2) == ["Hello", messages]


def test_hh_transcripts_give_their_prompts(tmp_path: Path) -> None:
    source = jsonl(
        tmp_path / "hh.jsonl",
        [
            {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi there\n\nAssistant: Go."},
            {"chosen": "\n\nHuman: Bye\n\nAssistant: See you.", "rejected": "\n\nHuman: Bye\n\nAssistant: Hm."},
        ],
    )
    prompts = read_prompts(source)
    assert prompts == [[{"role": "user", "content": "Hi there"}], [{"role": "user", "content": "Bye"}]]
    assert len(read_prompts("bundled:hh-harmless", limit=4)) == 4


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ({"prompt": ""}, "'prompt' must be"),
        ({"turns": []}, "'turns'"),
        ({"question": "x"}, "no prompt"),
        ({"prompt": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "assistant turn"),
    ],
)
def test_bad_row_named_by_file_and_row(tmp_path: Path, row: dict, says: str) -> None:
    source = jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"prompt": "fine"}, row])
    with pytest.raises(PreftuneError) as err:
        read_prompts(source)
    message = str(err.value)
    assert "bad.jsonl row 3" in message and says in message and "\n" not in message


def test_string_prompt_wrapped_as_a_user_turn(tokenizer) -> None:
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert encode_prompt(tokenizer, "Hi") == list(expected)


# ---- generating ------------------------------------------------------------------------------------


@pytest.mark.skipif(not MT_BENCH.is_file(), reason="MT-Bench questions not in /work/shared/data")
def test_n_completions_per_prompt_readable_by_rank(tmp_path: Path, model, tokenizer) -> None:
    prompts = [*read_prompts(MT_BENCH, limit=3), "A plain question?"]
    out = tmp_path / "generated.jsonl"
    report = generate_file(model, tokenizer, prompts, out, CONFIG, model_name="tiny-random")
    rows = rows_of(out)
    assert [r["prompt"] for r in rows] == prompts
    assert all(len(r["completions"]) == 2 and len(r["finished"]) == 2 for r in rows)
    assert all(r["model"] == "tiny-random" and r["seed"] == 0 for r in rows)
    assert report.generated == 4 and report.completions == 8 and report.tokens > 0
    assert "completions/s" in str(report) and "tokens/s" in str(report)
    candidates = read_candidates(out)
    assert [c.prompt for c in candidates] == prompts
    assert json.loads((tmp_path / "generated.jsonl.meta.json").read_text())["n"] == 2


def test_resume_after_truncated_row_generates_only_what_is_missing(
    tmp_path: Path, plain: Path, model, tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = read_prompts(plain)
    out = tmp_path / "out.jsonl"
    generate_file(model, tokenizer, prompts, out, CONFIG, model_name="tiny-random", chunk_prompts=2)
    lines = out.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6
    out.write_bytes(b"".join(lines[:3]) + lines[3][:10])  # killed while writing the 4th row

    sampled: list[list[int]] = []
    real = command.sample

    def counting(model, tokenizer, ids, config, progress=False):
        sampled.extend(ids if config.n == CONFIG.n else [])  # redraws of empty completions aside
        return real(model, tokenizer, ids, config, progress)

    monkeypatch.setattr(command, "sample", counting)
    done = open_output(out, Settings.of("tiny-random", CONFIG))
    assert len(done) == 3 and out.read_bytes() == b"".join(lines[:3])  # the cut row dropped, on disk too
    report = generate_file(model, tokenizer, prompts, out, CONFIG, model_name="tiny-random", done=done, chunk_prompts=2)
    assert report.skipped == 3 and report.generated == 3
    assert sampled == [encode_prompt(tokenizer, p) for p in prompts[3:]]
    again = out.read_bytes().splitlines(keepends=True)
    assert again[:3] == lines[:3]
    assert [r["prompt"] for r in rows_of(out)] == prompts  # each exactly once, in order
    # chunks are fixed slices of the prompt list: the untouched chunk (5th, 6th) is sampled exactly as before
    assert again[4:] == lines[4:]


def test_resume_with_other_settings_is_refused(tmp_path: Path, plain: Path, model, tokenizer) -> None:
    out = tmp_path / "out.jsonl"
    generate_file(model, tokenizer, read_prompts(plain, limit=1), out, CONFIG, model_name="tiny-random")
    with pytest.raises(PreftuneError, match=r"other settings \(n 2 -> 3\)"):
        open_output(out, Settings.of("tiny-random", SamplingConfig(n=3, temperature=0.7, max_new_tokens=4, seed=0)))
    stranger = jsonl(tmp_path / "stranger.jsonl", [{"prompt": "x", "completions": ["a", "b"]}])
    with pytest.raises(PreftuneError, match="not written by preftune generate"):
        open_output(stranger, Settings.of("tiny-random", CONFIG))


@pytest.mark.slow
def test_killed_process_resumes_with_no_prompt_twice(tmp_path: Path, plain: Path, model, tokenizer) -> None:
    """A real SIGKILL (test-only hook) after 2 chunks of one prompt; the rerun completes the rest."""
    out = tmp_path / "out.jsonl"
    args = [
        "generate",
        f"prompts={plain}",
        "model.name=tiny-random",
        "sampling.n=2",
        "sampling.max_new_tokens=4",
        "sampling.batch_size=2",
        "seed=0",
        f"out={out}",
    ]
    env = {**os.environ, KILL_HOOK: "2"}
    killed = subprocess.run(
        [sys.executable, "-m", "preftune.cli.main", *args], env=env, capture_output=True, timeout=120
    )
    assert killed.returncode == -9, killed.stderr.decode()
    before = out.read_bytes()
    assert len(before.splitlines()) == 2
    assert main(args) == 0  # same settings: resumes in-process (the module-level tiny model is cached on disk)
    rows = rows_of(out)
    assert [r["prompt"] for r in rows] == read_prompts(plain)
    assert out.read_bytes().startswith(before)
    full = tmp_path / "uninterrupted.jsonl"
    config = SamplingConfig(n=2, temperature=0.7, max_new_tokens=4, batch_size=2, seed=0)
    generate_file(model, tokenizer, read_prompts(plain), full, config, model_name="tiny-random")
    assert full.read_bytes() == out.read_bytes()  # killed at a chunk boundary: resumed == uninterrupted
    assert main([a.replace("sampling.n=2", "sampling.n=3") for a in args]) == 2  # other n on resume: refused


# ---- the command line: refusals before any model loads ------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["sampling.n=0"], "n must be at least 1"),
        (["limit=0"], "limit must be at least 1"),
        (["sampling.top_p=0"], "top_p"),
        (["prompts=missing.jsonl"], "no such file"),
    ],
)
def test_cli_errors_exit_2_without_a_model(
    tmp_path: Path, plain: Path, no_model: None, capsys: pytest.CaptureFixture[str], extra: list[str], says: str
) -> None:
    args = ["generate", f"prompts={plain}", "model.name=tiny-random", f"out={tmp_path / 'o.jsonl'}", *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and says in err and "\n" not in err


def test_cli_bad_row_and_mismatch_exit_2_without_a_model(
    tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"nothing": 1}])
    assert main(["generate", f"prompts={bad}", "model.name=tiny-random", f"out={tmp_path / 'o.jsonl'}"]) == 2
    assert "bad.jsonl row 2" in capsys.readouterr().err
    out = tmp_path / "made.jsonl"
    out.write_text(json.dumps({"prompt": "ok", "completions": ["a", "b"]}) + "\n")
    (tmp_path / "made.jsonl.meta.json").write_text(
        json.dumps(
            {
                "model": "tiny-random",
                "n": 4,
                "seed": 0,
                "temperature": 0.7,
                "top_p": 1.0,
                "top_k": 0,
                "max_new_tokens": 128,
            }
        )
    )
    good = jsonl(tmp_path / "good.jsonl", [{"prompt": "ok"}, {"prompt": "more"}])
    args = ["generate", f"prompts={good}", "model.name=tiny-random", f"out={out}", "sampling.n=2"]
    assert main(args) == 2
    assert "other settings (n 4 -> 2)" in capsys.readouterr().err
    assert prompt_key("ok") in open_output(
        out, Settings.of("tiny-random", SamplingConfig(n=4, temperature=0.7, seed=0))
    )
