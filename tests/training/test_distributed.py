"""Two processes train as one: ``torchrun --nproc_per_node 2`` (gloo, CPU) with a global batch of
8 ends with the weights and the per-step history of a single process with a batch of 8.

The objective carries a user term that makes the loss NaN (with a finite gradient) for one
training pair; in the two-process run only one process holds it on the steps that read it. The
single process skips those steps, so the two processes must skip them too, together.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from preftune.cli.config import load_config
from preftune.data import load_preference_data, tokenize_examples
from preftune.modeling import load_tokenizer
from preftune.training.plan import BatchPlan
from tests.training import terms  # noqa: F401  (registers the test terms)
from tests.training.common import (
    BIN,
    TIMEOUT,
    TORCHRUN,
    DataFiles,
    assert_same_history,
    assert_same_tensors,
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
        **{"optim.batch_size": 8, "optim.max_steps": STEPS, "optim.warmup_ratio": 0.0, "save_every": STEPS},
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


def test_two_processes_equal_one(data_files: DataFiles, tmp_path: Path) -> None:
    _, tokens = _poisoned_pair(data_files)
    single, double = tmp_path / "single", tmp_path / "double"
    with pytest.warns(UserWarning, match="non-finite"):
        train(_overrides(data_files, single, tokens))

    command = [TORCHRUN, "--standalone", "--nproc_per_node", "2", str(WORKER), *_overrides(data_files, double, tokens)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env(1))
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s:\n{err.stderr}")
    assert result.returncode == 0, result.stderr[-5000:]
    # one group of two processes, not two single-process runs side by side: only one of them reports
    assert result.stderr.count("train data:") == 1, result.stderr[-5000:]

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


FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
mixed_precision: 'no'
num_machines: 1
num_processes: 2
use_cpu: true
"""


def test_a_sharded_launch_is_refused_before_any_model_loads(data_files: DataFiles, tmp_path: Path) -> None:
    """``accelerate launch`` with an FSDP config: on a CPU accelerate would run DDP and ignore the
    config, and preftune's checkpoints, resume and sampling read whole parameters, so each process
    refuses in one line (exit 2) before loading anything, and writes nothing. (The first refusal
    stops the launch: the other process may be terminated before it prints, and accelerate's own
    launcher then prints its traceback, which holds no preftune frame.)"""
    config = tmp_path / "fsdp.yaml"
    config.write_text(FSDP_CONFIG)
    out = tmp_path / "out"
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(config), "-m", "preftune.cli.main", "train"]
    result = subprocess.run(
        [*command, *lora_overrides(data_files, out)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=subprocess_env(1),
    )
    assert result.returncode != 0
    refused = "error: accelerate launch asked for FSDP"
    refusals = [line for line in result.stderr.splitlines() if line.startswith(refused)]
    assert 1 <= len(refusals) <= 2, result.stderr[-3000:]
    assert "DDP only" in refusals[0] and "preftune/" not in result.stderr, result.stderr[-3000:]
    assert not out.exists()
