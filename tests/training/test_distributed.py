"""Two processes train as one: ``torchrun --nproc_per_node 2`` (gloo, CPU; DDP) and ``accelerate
launch`` with an FSDP config (the policy sharded with FSDP2) with a global batch of 8 end with the
weights and the per-step history of a single process with a batch of 8.

The objective carries a user term that makes the loss NaN (with a finite gradient) for one
training pair; in the two-process run only one process holds it on the steps that read it. The
single process skips those steps, so the two processes must skip them too, together.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from preftune.cli.config import load_config
from preftune.data import load_preference_data, tokenize_examples
from preftune.modeling import load_tokenizer
from preftune.run_layout import DONE_FILE
from preftune.training.plan import BatchPlan
from tests.training import terms  # noqa: F401  (registers the test terms)
from tests.training.common import (
    TIMEOUT,
    TORCHRUN,
    DataFiles,
    Run,
    assert_same_history,
    assert_same_tensors,
    fsdp_launch,
    lora_overrides,
    model_weights,
    subprocess_env,
    train,
    trainer_state,
)

pytestmark = pytest.mark.slow  # torchrun: two processes

WORKER = Path(__file__).with_name("ddp_worker.py")
STEPS = 4


def _overrides(data: DataFiles, out: Path, tokens: int) -> list[str]:
    return lora_overrides(
        data,
        out,
        objective=f"dpo + exmate + nan_for_length(tokens={tokens})",
        **{"optim.batch_size": 8, "optim.max_steps": STEPS, "optim.warmup_ratio": 0.0, "save_every": 2},
    )


def _poisoned_pair(data: DataFiles) -> tuple[int, int]:
    """(index, chosen length) of a training pair whose chosen length no other pair has, which the
    second process reads on some steps and no process reads on others."""
    config = load_config(None, lora_overrides(data, Path("unused")))
    examples, _ = load_preference_data(config.data.train)
    pairs, _ = tokenize_examples(examples, load_tokenizer("tiny-random"), 64, 32)
    lengths = [len(p.chosen_ids) for p in pairs[: config.data.train_size]]
    plan = BatchPlan(len(lengths), 8, seed=0, world_size=2)
    for index, length in enumerate(lengths):
        if lengths.count(length) != 1:
            continue
        on_second = [index in plan.micro_batches(step, rank=1)[0].tolist() for step in range(STEPS)]
        if any(on_second) and not all(on_second):
            in_any = [index in plan.step_indices(step).tolist() for step in range(STEPS)]
            if in_any == on_second:
                return index, length
    pytest.fail("no training pair fits the test's needs; change the data seed")


@pytest.fixture(scope="module")
def one_process(data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The single-process run both launches must equal, and the poisoned pair's chosen length."""
    _, tokens = _poisoned_pair(data_files)
    single = tmp_path_factory.mktemp("one-process") / "run"
    with pytest.warns(UserWarning, match="non-finite"):
        train(_overrides(data_files, single, tokens))
    return single, tokens


def _assert_equal_runs(double: Path, single: Path) -> None:
    """The same per-step history, final weights and held-out evaluations, to float rounding."""
    history_1 = trainer_state(single, STEPS)["history"]
    history_2 = trainer_state(double, STEPS)["history"]
    skipped = [h["skipped"] for h in history_1]
    assert 0 < sum(skipped) < STEPS, skipped  # the test means something only with both kinds of step
    assert [h["tokens_per_s"] > 0 for h in history_2] == [True] * STEPS
    # float32 sums reduced in another order (one process against two) differ by a few 1e-6 of their
    # size: a margin of 8.04 came out 8.040533 against 8.040522 on an AMD EPYC (Zen 4)
    assert_same_history(history_2, history_1, atol=1e-5, rtol=1e-5)
    assert_same_tensors(model_weights(double / "model"), model_weights(single / "model"), atol=1e-5)
    # the held-out evaluation, split over the two processes and gathered, matches too
    outcome_2 = trainer_state(double, STEPS)["hooks"]["evals"]["records"]
    outcome_1 = trainer_state(single, STEPS)["hooks"]["evals"]["records"]
    for e2, e1 in zip(outcome_2, outcome_1, strict=True):
        for name in e1:
            if name != "step":
                assert e2[name]["count"] == e1[name]["count"] == 8
                # relative too: chosen_perplexity is ~2e5, exp of a float32 mean, so its rounding scales with it
                assert e2[name]["mean"] == pytest.approx(e1[name]["mean"], rel=1e-5, abs=1e-4), name


def test_two_processes_equal_one(data_files: DataFiles, one_process: tuple[Path, int], tmp_path: Path) -> None:
    single, tokens = one_process
    double = tmp_path / "double"
    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(WORKER), *_overrides(data_files, double, tokens)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env(1))
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s:\n{err.stderr}")
    assert result.returncode == 0, result.stderr[-5000:]
    # one group of two processes, not two single-process runs side by side: only one of them reports
    assert result.stderr.count("train data:") == 1, result.stderr[-5000:]
    assert "FSDP" not in result.stderr
    _assert_equal_runs(double, single)


def test_an_fsdp_launch_trains_as_one_process_and_resumes_in_one(
    data_files: DataFiles, one_process: tuple[Path, int], tmp_path: Path
) -> None:
    """``accelerate launch`` with an FSDP config: the policy (LoRA) sharded over 2 processes with
    FSDP2 trains as one process does, skipped steps, the reference forwarded within each step,
    held-out evaluations and the saved adapter included; its checkpoint (the optimiser state
    gathered whole) resumes in one process."""
    single, tokens = one_process
    double = tmp_path / "fsdp"
    # the reference scored in each step (the adapters off, all processes together), not precomputed as
    # in the one-process run: the same log-probs, so the same run
    live = "reference=adapter"
    result = fsdp_launch(tmp_path, str(WORKER), *_overrides(data_files, double, tokens), live)
    assert result.returncode == 0, result.stderr[-5000:]
    assert result.stderr.count("train data:") == 1, result.stderr[-5000:]
    assert result.stderr.count("FSDP: the policy sharded over 2 processes") == 1, result.stderr[-5000:]
    _assert_equal_runs(double, single)
    saved = torch.load(double / "checkpoints" / "step-000002" / "optimizer.pt", weights_only=False)["optimizer"]
    assert all(isinstance(name, str) for name in saved["param_groups"][0]["params"])  # whole, by name

    # the run lost its last steps: one process continues from the FSDP run's step-2 checkpoint
    resumed = tmp_path / "resumed"
    shutil.copytree(double, resumed)
    for lost in ("checkpoints/step-000004", "model", "merged", DONE_FILE):
        path = resumed / lost
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    with pytest.warns(UserWarning, match="non-finite"):
        train([*_overrides(data_files, resumed, tokens), live, "resume=true"])
    assert_same_tensors(model_weights(resumed / "model"), model_weights(single / "model"), atol=1e-5)
    assert_same_history(trainer_state(resumed, STEPS)["history"], trainer_state(single, STEPS)["history"], 1e-5, 1e-5)


def test_fsdp_fine_tunes_every_weight_as_one_process(full_run: Run, tmp_path: Path) -> None:
    """Full fine-tuning under FSDP: the tied embeddings and LM head sit in the root unit, whose
    gradients are reduce-scattered apart from the decoder layers'."""
    out = tmp_path / "fsdp"
    overrides = [o for o in full_run.overrides if not o.startswith("output_dir=")] + [f"output_dir={out}"]
    result = fsdp_launch(tmp_path, "-m", "preftune.cli.main", "train", *overrides)
    assert result.returncode == 0, result.stderr[-5000:]
    steps = full_run.outcome["stages"][0]["steps"]
    history, reference = trainer_state(out, steps)["history"], trainer_state(full_run.out, steps)["history"]
    assert_same_history(history, reference, atol=1e-5, rtol=1e-5)
    assert_same_tensors(model_weights(out / "model"), model_weights(full_run.out / "model"), atol=1e-5)
