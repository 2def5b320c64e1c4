"""``preftune train`` and ``preftune evaluate`` as a user runs them (real subprocesses): bad input
gives one clear ``error:`` line on stderr and exit code 2, never a traceback; ``--print-config``
shows the merged configuration.

The bad inputs that need no model run on a fresh machine: preftune's and Hugging Face's caches
are new empty folders, and stay empty — the input is refused before anything is loaded or
converted (the embedded model's one-time conversion used to run first, and fill stderr)."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from preftune.cli.config import load_config
from tests.training.common import error_lines, run_cli, write_jsonl, write_text_pairs


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cli_data")
    good = write_text_pairs(folder / "good.jsonl", 24)
    rows = [json.loads(line) for line in good.read_text(encoding="utf-8").splitlines()]
    write_jsonl(
        folder / "columns.jsonl",
        [{"prompt": r["prompt"], "chosen_response": r["chosen"], "rejected": r["rejected"]} for r in rows],
    )
    (folder / "empty.jsonl").write_text("", encoding="utf-8")
    (folder / "latin1.jsonl").write_bytes(
        good.read_bytes() + '{"prompt": "caf\u00e9?", "chosen": "Oui.", "rejected": "Non."}\n'.encode("latin-1")
    )
    write_jsonl(folder / "same.jsonl", [*rows[:3], {**rows[3], "rejected": rows[3]["chosen"]}, *rows[4:]])
    (folder / "malformed.yaml").write_text("optim:\n  lr: [1e-4\n  batch_size: 8\n", encoding="utf-8")
    # an output folder holding a checkpoint of an earlier run
    earlier = folder / "earlier"
    (earlier / "checkpoints" / "step-000003").mkdir(parents=True)
    (earlier / "checkpoints" / "step-000003" / "trainer_state.json").write_text('{"step": 3}', encoding="utf-8")
    (earlier / "run_config.json").write_text('{"earlier": true}', encoding="utf-8")
    _write_bad_sources(folder, rows)
    (folder / "a-file").write_text("not a folder", encoding="utf-8")
    return folder


def _write_bad_sources(folder: Path, rows: list[dict]) -> None:
    good = "".join(json.dumps(r) + "\n" for r in rows[:6])
    (folder / "truncated.jsonl").write_text(good + json.dumps(rows[6])[:30], encoding="utf-8")
    (folder / "object.json").write_text(json.dumps(rows[0]), encoding="utf-8")
    unrelated = folder / "unrelated"
    unrelated.mkdir()
    (unrelated / "README.md").write_text("# notes\n", encoding="utf-8")
    (unrelated / "script.py").write_text("print('hi')\n", encoding="utf-8")
    write_jsonl(
        folder / "alpaca_eval.jsonl",
        [{"instruction": r["prompt"], "output_1": r["chosen"], "output_2": r["rejected"]} for r in rows],
    )


def _train(files: Path, *extra: str, data: str = "good.jsonl", out: str = "out") -> list[str]:
    return [
        "train",
        "model.name=tiny-random",
        f"data.train={files / data}",
        f"output_dir={files / out}",
        "data.eval_size=4",
        "optim.batch_size=4",
        "optim.max_steps=1",
        "trackers=[]",
        *extra,
    ]


# name -> (arguments given the data folder, what the one error line must say)
CASES = {
    "model path does not exist": (
        lambda f: _train(f, f"model.name={f / 'no-such-model'}"),
        "model path '{f}/no-such-model' does not exist",
    ),
    "missing data file": (lambda f: _train(f, data="missing.jsonl"), "no such file: {f}/missing.jsonl"),
    "wrong column names": (lambda f: _train(f, data="columns.jsonl"), "no 'chosen' column; found"),
    "empty dataset": (lambda f: _train(f, data="empty.jsonl"), "empty dataset"),
    "bytes that are not UTF-8": (lambda f: _train(f, data="latin1.jsonl"), "latin1.jsonl line 25: bytes that are not"),
    "chosen equals rejected": (lambda f: _train(f, data="same.jsonl"), "same.jsonl row 4: field 'rejected': chosen"),
    "unknown config key": (
        lambda f: _train(f, "optim.bacth_size=4"),
        "config key does not exist: 'optim.bacth_size' (did you mean 'optim.batch_size'?)",
    ),
    "malformed YAML": (lambda f: ["train", str(f / "malformed.yaml")], "malformed.yaml: not valid YAML"),
    "batch not divisible by accumulation": (
        lambda f: _train(f, "optim.batch_size=6", "optim.grad_accumulation=4"),
        "optim.batch_size 6 is not a multiple of optim.grad_accumulation 4",
    ),
    "beta zero": (lambda f: _train(f, "objective=dpo(beta=0)"), "dpo: beta must be > 0, got 0.0"),
    "group objective on pairs": (
        lambda f: _train(f, "objective=reinforce"),
        "good.jsonl: group objectives need ranked completions ('completions' with 'scores' or 'ranks', or "
        "OpenAssistant message trees); this is standard pair data",
    ),
    "earlier run without --resume": (
        lambda f: _train(f, out="earlier"),
        "{f}/earlier holds checkpoints of an earlier run: resume it with --resume",
    ),
    "eval_size negative": (lambda f: _train(f, "data.eval_size=-3"), "data.eval_size must be >= 0, got -3"),
    "max_steps zero": (lambda f: _train(f, "optim.max_steps=0"), "optim.max_steps must be >= 1, got 0"),
    "train_size zero": (lambda f: _train(f, "data.train_size=0"), "data.train_size must be >= 1, got 0"),
    "eval batch size zero": (lambda f: _train(f, "eval.batch_size=0"), "eval.batch_size must be >= 1, got 0"),
    "logit_chunk zero": (lambda f: _train(f, "logit_chunk=0"), "logit_chunk must be >= 1, got 0"),
    "unknown schedule": (lambda f: _train(f, "optim.schedule=bogus"), "optim.schedule must be one of linear, "),
    "unknown dtype": (lambda f: _train(f, "model.dtype=float33"), "model.dtype must be one of auto, float32"),
    "learning rate not finite": (lambda f: _train(f, "optim.lr=.nan"), "optim.lr must be a finite number"),
    "output_dir is a file": (lambda f: _train(f, out="a-file"), "output_dir {f}/a-file is a file, not a folder"),
    "output_dir not writable": (
        lambda f: [*_train(f), "output_dir=/proc/preftune-out"],
        "output_dir /proc/preftune-out: cannot write in /proc",
    ),
    "unknown tracker": (lambda f: _train(f, "trackers=[wandbb]"), "unknown tracker 'wandbb'; did you mean 'wandb'?"),
    "tracker not installed": (lambda f: _train(f, "trackers=[comet_ml]"), "trackers: 'comet_ml' is not installed"),
    "two stages of one name": (
        lambda f: _train(f, "stages=[{name: a, objective: dpo}, {name: a, objective: exmate}]"),
        "stages.1.name 'a' is used by two stages",
    ),
    "resume with nothing to resume": (
        lambda f: [*_train(f, out="fresh"), "--resume"],
        "--resume: {f}/fresh holds no checkpoint to continue from",
    ),
    "truncated last JSON line": (lambda f: _train(f, data="truncated.jsonl"), "truncated.jsonl line 7:"),
    "a JSON object, not rows": (lambda f: _train(f, data="object.json"), "object.json"),
    "a folder of unrelated files": (lambda f: _train(f, data="unrelated"), "unrelated"),
    "two responses and no label": (lambda f: _train(f, data="alpaca_eval.jsonl"), "label"),
    "evaluate: no data": (
        lambda f: ["evaluate", "model.name=tiny-random"],
        "evaluate needs model.name= and data.eval=, or run=DIR",
    ),
    "evaluate: a setting that is not data": (
        lambda f: ["evaluate", "model.name=tiny-random", f"data.eval={f / 'good.jsonl'}", "optim.lr=1"],
        "evaluate: setting does not exist: 'optim.lr' (a 'preftune train' setting); "
        "'preftune evaluate --help' lists the settings",
    ),
    "evaluate: a run folder that is not one": (
        lambda f: ["evaluate", f"run={f / 'unrelated'}"],
        "run={f}/unrelated: no run_config.json",
    ),
    "evaluate: missing data file": (
        lambda f: ["evaluate", "model.name=tiny-random", f"data.eval={f / 'missing.jsonl'}"],
        "no such file: {f}/missing.jsonl",
    ),
    "evaluate: model path does not exist": (
        lambda f: ["evaluate", f"model.name={f / 'nothing'}", f"data.eval={f / 'good.jsonl'}"],
        "model path '{f}/nothing' does not exist",
    ),
}


# Cases refused only once the model is there (its tokenizer or its modules are what is wrong).
MODEL_CASES = {
    "max length shorter than every prompt": (
        lambda f: _train(f, "data.max_length=8"),
        "data.max_length 8 is shorter than every prompt (shortest: ",
    ),
    "LoRA target that names no module": (
        lambda f: _train(f, "lora.target_modules=[q_proj, qproj]", out="bad-lora"),
        "lora.target_modules: no module named 'qproj' in the model; linear modules: down_proj, gate_proj",
    ),
}


@pytest.fixture(scope="module")
def fresh_caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Cache variables pointing at new empty folders: a machine on which nothing was ever converted."""
    root = tmp_path_factory.mktemp("fresh-machine")
    return {"PREFTUNE_CACHE": str(root / "preftune"), "HF_HOME": str(root / "hf"), "XDG_CACHE_HOME": str(root / "xdg")}


@pytest.fixture(scope="module")
def results(files: Path, fresh_caches: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every bad-input command, run two at a time (each is mostly the start-up of Python); those that
    need no model on empty caches."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(run_cli, *make(files), env=fresh_caches) for name, (make, _) in CASES.items()}
        futures |= {name: pool.submit(run_cli, *make(files)) for name, (make, _) in MODEL_CASES.items()}
        return {name: future.result() for name, future in futures.items()}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES) + list(MODEL_CASES))
def test_bad_input_is_one_clear_error_line(case: str, files: Path, results: dict) -> None:
    result = results[case]
    expected = {**CASES, **MODEL_CASES}[case][1].format(f=files)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = error_lines(result)
    assert len(lines) == 1, result.stderr
    assert expected in lines[0], lines[0]
    if case in CASES:  # refused before any model work: nothing else on stderr at all
        assert result.stderr.strip() == lines[0], result.stderr


@pytest.mark.slow
def test_input_refused_before_any_model_work_leaves_the_caches_and_output_empty(
    files: Path, results: dict, fresh_caches: dict[str, str]
) -> None:
    assert all(results[case].returncode == 2 for case in CASES)
    for name in ("PREFTUNE_CACHE", "HF_HOME"):  # nothing converted, downloaded or cached
        folder = Path(fresh_caches[name])
        assert not folder.exists() or not any(folder.rglob("*")), sorted(folder.rglob("*"))[:5]
    xdg = Path(fresh_caches["XDG_CACHE_HOME"])  # matplotlib (imported by torch's sympy) keeps a font list there
    assert {p.name for p in xdg.iterdir()} <= {"matplotlib"} if xdg.exists() else True
    assert not (files / "out").exists() and not (files / "fresh").exists()
    assert not (files / "bad-lora").exists()  # refused once the model was there, still before writing


@pytest.mark.slow
def test_refusing_an_earlier_run_leaves_its_files_alone(files: Path, results: dict) -> None:
    assert results["earlier run without --resume"].returncode == 2
    assert (files / "earlier" / "run_config.json").read_text(encoding="utf-8") == '{"earlier": true}'
    assert not (files / "earlier" / "data_summary.json").exists()


@pytest.mark.slow
def test_print_config_shows_yaml_merged_with_overrides(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text(
        "optim:\n  lr: 1.0e-4\n  batch_size: 4\ndata:\n  columns:\n    chosen: answer\n"
        "stages:\n  - name: first\n    objective: exmate\n"
        "  - name: second\n    objective: dpo\n    reference: previous\n",
        encoding="utf-8",
    )
    result = run_cli(
        "train",
        str(config),
        "optim.lr=0.02",
        "data.columns.rejected=bad",
        "stages.1.max_steps=7",
        "objective=dpo + 0.5*exmate(lam=0.1)",
        f"output_dir={tmp_path / 'out'}",
        "--resume",
        "--print-config",
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["optim"]["lr"] == 0.02  # the override wins over the YAML
    assert printed["optim"]["batch_size"] == 4  # the YAML wins over the default
    assert printed["optim"]["epochs"] == 1.0 and printed["data"]["max_length"] == 1024  # defaults stay
    assert printed["data"]["columns"] == {"chosen": "answer", "rejected": "bad"}  # mappings merge
    assert [s["name"] for s in printed["stages"]] == ["first", "second"]
    assert printed["stages"][1]["max_steps"] == 7 and printed["stages"][1]["reference"] == "previous"
    assert printed["stages"][0]["reference"] == "auto" and printed["stages"][0]["max_steps"] is None
    assert printed["objective"] == "dpo + 0.5*exmate(lam=0.1)"
    assert printed["resume"] is True
    assert not (tmp_path / "out").exists()  # printing trains nothing

    # and the printed YAML is itself a config that loads back to the same thing
    again = tmp_path / "printed.yaml"
    again.write_text(result.stdout, encoding="utf-8")
    assert load_config(again, []) == load_config(
        config,
        [
            "optim.lr=0.02",
            "data.columns.rejected=bad",
            "stages.1.max_steps=7",
            "objective=dpo + 0.5*exmate(lam=0.1)",
            f"output_dir={tmp_path / 'out'}",
            "resume=true",
        ],
    )


@pytest.mark.slow
def test_print_config_without_a_file() -> None:
    result = run_cli("train", "optim.batch_size=16", "lora.enabled=false", "trackers=[]", "--print-config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["optim"]["batch_size"] == 16 and printed["lora"]["enabled"] is False
    assert printed["trackers"] == [] and printed["objective"] == "dpo"  # TRL's default objective
    assert printed["optim"]["lr"] == 1e-6  # TRL's default rate for full fine-tuning, stated


@pytest.mark.slow
def test_print_config_states_the_defaults_a_trl_user_expects() -> None:
    lora = yaml.safe_load(run_cli("train", "--print-config").stdout)
    assert lora["objective"] == "dpo" and lora["lora"]["enabled"] is True and lora["optim"]["lr"] == 5e-4
    # a documented value YAML 1.1 would read as a boolean, a key=value after --resume, a list of modules
    result = run_cli(
        "train", "--resume", "optim.mixed_precision=no", "lora.target_modules=[q_proj, v_proj]", "--print-config"
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["optim"]["mixed_precision"] == "no" and printed["resume"] is True
    assert printed["lora"]["target_modules"] == ["q_proj", "v_proj"]


def test_yaml_reads_documented_words_as_strings(tmp_path: Path) -> None:
    """YAML 1.1 (PyYAML's default) reads `no` as false; a documented value must stay the word."""
    config = tmp_path / "run.yaml"
    config.write_text("optim:\n  mixed_precision: no\nlora:\n  target_modules: [q_proj, v_proj]\n", encoding="utf-8")
    loaded = load_config(config, ["model.name=off"])
    assert loaded.optim.mixed_precision == "no" and loaded.model.name == "off"
    assert loaded.lora.target_modules == ["q_proj", "v_proj"]
    assert load_config(None, ["merge_lora=true"]).merge_lora is True  # true/false are still booleans
