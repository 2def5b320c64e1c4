"""A run says what it does and does only that: ``--resume`` refuses a changed run, the held-out split
is saved and never shares a prompt with training, the reference is computed for the pairs the run
reads and no more, held-out evaluations and Ctrl-C speak on the console, and the data summary
counts what was really used."""

from __future__ import annotations

import json
import shutil
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from preftune.cli.config import load_config
from preftune.data.split import pair_key, prompt_key
from preftune.errors import PreftuneError
from preftune.run.inputs import load_examples
from preftune.run.resume import changed_keys
from preftune.run.train import run_training
from tests.training.common import DataFiles, Run, full_overrides, metric_means, run_cli, train, write_jsonl


def _copy_run(run: Run, tmp_path: Path) -> tuple[Path, list[str]]:
    out = tmp_path / "copy"
    shutil.copytree(run.out, out)
    return out, [o for o in run.overrides if not o.startswith("output_dir=")] + [f"output_dir={out}"]


@pytest.mark.parametrize(
    ("change", "named"),
    [("objective=dpo", "objective"), ("lora.rank=8", "lora.rank (4 -> 8)"), ("optim.max_steps=7", "optim.max_steps")],
)
def test_resume_refuses_a_change_to_what_is_trained(lora_run: Run, tmp_path: Path, change: str, named: str) -> None:
    out, overrides = _copy_run(lora_run, tmp_path)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    with pytest.raises(PreftuneError, match="--resume would change what is trained: ") as refused:
        train([*overrides, change, "resume=true"])
    assert named in str(refused.value) and "\n" not in str(refused.value)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written


def test_resume_refuses_changed_data_behind_the_same_path(data_files: DataFiles, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in data_files.train.read_text(encoding="utf-8").splitlines()]
    data = write_jsonl(tmp_path / "train.jsonl", rows)
    overrides = full_overrides(data_files, tmp_path / "run", **{"data.train": str(data), "optim.max_steps": 2})
    train(overrides)
    rows[5] = {**rows[5], "chosen": rows[5]["chosen"] + " Edited."}
    write_jsonl(data, rows)
    with pytest.raises(PreftuneError, match=r"the (training|held-out) pairs differ from the run's"):
        train([*overrides, "resume=true"])


def test_settings_that_do_not_change_training_may_change_on_resume() -> None:
    saved = {
        "objective": "dpo",
        "trackers": ["tensorboard"],
        "save_every": 50,
        "eval": {"every": 0, "batch_size": 16},
        "optim": {"lr": 1e-4},
    }
    now = {
        "objective": "dpo",
        "trackers": [],
        "save_every": 5,
        "eval": {"every": 10, "batch_size": 4},
        "optim": {"lr": 2e-4},
    }
    assert changed_keys(saved, now) == ["optim.lr"]


def test_duplicated_pairs_and_shared_prompts_never_straddle_the_split(data_files: DataFiles, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in data_files.train.read_text(encoding="utf-8").splitlines()]
    doubled = write_jsonl(tmp_path / "doubled.jsonl", rows + rows)  # every pair twice
    config = load_config(None, [f"data.train={doubled}", "data.eval_size=4"])
    examples = load_examples(config.data)
    assert len(examples.held_out) >= 4 and len(examples.train) + len(examples.held_out) == 2 * len(rows)
    trained = {pair_key(e) for e in examples.train}
    assert not any(pair_key(e) in trained for e in examples.held_out)
    assert not {prompt_key(e) for e in examples.held_out} & {prompt_key(e) for e in examples.train}
    assert examples.summaries["train"].to_dict()["split"]["duplicate_pairs"] == len(rows)


def _console() -> tuple[Console, StringIO]:
    text = StringIO()
    return Console(file=text, width=300, soft_wrap=True), text


def test_the_reference_is_computed_for_the_pairs_the_run_reads(data_files: DataFiles, tmp_path: Path) -> None:
    console, text = _console()
    overrides = full_overrides(data_files, tmp_path / "run", **{"optim.max_steps": 1, "data.eval_size": 4})
    run_training(load_config(None, overrides), console=console)
    assert "(4 of 20 training examples read by this stage)" in text.getvalue()  # one step of 4 pairs


def test_a_precomputed_reference_holds_only_the_pairs_asked_for(data_files: DataFiles) -> None:
    from accelerate import Accelerator

    from preftune.data import Batcher
    from preftune.modeling import load_model, load_tokenizer
    from preftune.objectives import build
    from preftune.run.inputs import tokenize_inputs
    from preftune.run.references import make_reference

    config = load_config(None, full_overrides(data_files, Path("unused"), **{"data.eval_size": 4}))
    tokenizer = load_tokenizer("tiny-random")
    inputs = tokenize_inputs(load_examples(config.data), tokenizer, config.data)
    model = load_model("tiny-random")
    batcher = Batcher(tokenizer.pad_token_id, "padded")
    train_ref, eval_ref = make_reference(
        "precomputed",
        build("dpo"),
        model,
        config,
        inputs.train,
        inputs.held_out,
        batcher,
        Accelerator(cpu=True),
        train_ids=[3, 7, 11],
    )
    assert train_ref.table["example_ids"].tolist() == [3, 7, 11]
    assert eval_ref.table["example_ids"].tolist() == [0, 1, 2, 3]


def test_evaluations_and_ctrl_c_speak_on_the_console(data_files: DataFiles, tmp_path: Path) -> None:
    def interrupt(step: int, stats: dict) -> None:
        if step == 3:
            raise KeyboardInterrupt

    console, text = _console()
    out = tmp_path / "run"
    overrides = full_overrides(data_files, out, **{"eval.every": 1, "optim.max_steps": 4})
    with pytest.raises(KeyboardInterrupt):
        run_training(load_config(None, overrides), callbacks=[interrupt], console=console)
    shown = text.getvalue()
    assert "held-out at step 0/4: accuracy 0.5000" in shown and "held-out at step 2/4: accuracy " in shown
    assert f"interrupted in stage 'train'; --resume continues from {out / 'checkpoints' / 'step-000002'}" in shown


def test_every_held_out_evaluation_is_kept_in_the_outcome(data_files: DataFiles, tmp_path: Path) -> None:
    """``eval.every``'s periodic evaluations reach ``outcome.json`` and the stage's record, not only the console."""
    out = tmp_path / "run"
    outcome = train(full_overrides(data_files, out, **{"eval.every": 1, "optim.max_steps": 3}))
    stage = outcome["stages"][0]
    assert [e["step"] for e in stage["evals"]] == [0, 1, 2, 3]
    assert stage["evals"][0] == stage["eval_before"] and stage["evals"][-1] == stage["eval_after"]
    assert len({e["accuracy"]["mean"] for e in stage["evals"]} | {e["margin"]["mean"] for e in stage["evals"]}) > 2
    saved = json.loads((out / "outcome.json").read_text(encoding="utf-8"))
    assert saved["stages"][0]["evals"] == json.loads(json.dumps(stage["evals"]))
    assert json.loads((out / "stage_done.json").read_text(encoding="utf-8"))["evals"] == saved["stages"][0]["evals"]


@pytest.mark.slow
def test_the_held_out_split_is_saved_and_evaluate_run_scores_it(full_run: Run) -> None:
    held = [json.loads(line) for line in (full_run.out / "heldout.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(held) == 8 and all(row.keys() == {"prompt", "chosen", "rejected"} for row in held)
    result = run_cli("evaluate", f"run={full_run.out}")
    assert result.returncode == 0, result.stderr
    accuracy = next(line for line in result.stdout.splitlines() if line.startswith("accuracy "))
    expected = metric_means(full_run.outcome["stages"][0]["eval_after"])["accuracy"]
    assert accuracy.split()[1] == f"{expected:.4f}" and accuracy.endswith("(8)")


def test_the_data_summary_counts_what_was_used(lora_run: Run) -> None:
    summary = json.loads((lora_run.out / "data_summary.json").read_text(encoding="utf-8"))
    assert summary["train"]["kept"] == 16  # data.train_size=16 of the file's 24 pairs


def test_gradient_checkpointing_trains_the_same_model(data_files: DataFiles, tmp_path: Path) -> None:
    settings = {"optim.max_steps": 2, "data.eval_size": 4}
    plain = train(full_overrides(data_files, tmp_path / "plain", **settings))
    recomputed = train(
        full_overrides(data_files, tmp_path / "gc", **settings, **{"model.gradient_checkpointing": True})
    )
    after, again = (metric_means(o["stages"][0]["eval_after"]) for o in (plain, recomputed))
    assert after["margin"] != 0  # it trained
    for name, value in after.items():
        assert again[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name


@pytest.mark.slow
def test_piped_output_is_not_wrapped_at_80_columns(data_files: DataFiles, tmp_path: Path) -> None:
    result = run_cli("train", *full_overrides(data_files, tmp_path / "run", **{"optim.max_steps": 1}))
    assert result.returncode == 0, result.stderr
    stage = next(line for line in result.stderr.splitlines() if line.startswith("stage 'train': 1.0*dpo("))
    assert len(stage) > 80 and stage.rstrip().endswith(")")  # the whole objective on one line


def test_evaluate_reads_labelled_pairs_by_their_label(full_run: Run, data_files: DataFiles, tmp_path: Path) -> None:
    """AlpacaEval-shaped rows with the better response second (``preference`` 2) score exactly as the
    same pairs given as chosen/rejected: the label decides, not the column order."""
    from preftune.evaluation.command import evaluate_model

    rows = [json.loads(line) for line in data_files.eval.read_text(encoding="utf-8").splitlines()]
    labelled = write_jsonl(
        tmp_path / "annotations.jsonl",
        [
            {"instruction": r["prompt"], "output_1": r["rejected"], "output_2": r["chosen"], "preference": 2}
            for r in rows
        ],
    )
    model = str(full_run.out / "model")
    plain = evaluate_model(model, "tiny-random", str(data_files.eval), max_length=64)
    by_label = evaluate_model(
        model,
        "tiny-random",
        str(labelled),
        max_length=64,
        data_config=load_config(None, ["data.labels.column=preference"]).data,
    )
    assert plain["accuracy"].count == by_label["accuracy"].count == len(rows)
    for name, value in plain.items():
        assert by_label[name].mean == pytest.approx(value.mean, rel=1e-6, abs=1e-7), name
