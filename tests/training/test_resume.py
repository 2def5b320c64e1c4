"""Resuming is exact: a run stopped after a checkpoint and resumed ends with the same weights and
the same per-step history as a run that was never stopped (LoRA and full fine-tuning, in process
and as a ``preftune train`` process killed with SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from preftune.errors import PreftuneError
from tests.training.common import (
    EXE,
    TIMEOUT,
    Run,
    assert_same_history,
    assert_same_tensors,
    checkpoint_weights,
    model_weights,
    run_cli,
    subprocess_env,
    train,
    trainer_state,
)


class Crash(Exception):
    """What the callback raises: the process dies right after a step (and its checkpoint)."""


def crash_after(k: int):
    def callback(done: int, stats: dict[str, float]) -> None:
        if done == k:
            raise Crash(f"simulated crash after step {k}")

    return callback


def _crash_and_resume(reference: Run, out: Path, crash_at: int, checkpoint_at: int) -> None:
    overrides = [o for o in reference.overrides if not o.startswith("output_dir=")] + [f"output_dir={out}"]
    with pytest.raises(Crash):
        train(overrides, callbacks=[crash_after(crash_at)])
    assert (out / "checkpoints" / f"step-{checkpoint_at:06d}").is_dir()
    assert not (out / "model").exists(), "the crashed run must not have finished"
    total = reference.outcome["stages"][0]["steps"]
    assert crash_at < total

    outcome = train([*overrides, "resume=true"])

    assert outcome["stages"][0]["steps"] == total
    assert_same_tensors(model_weights(out / "model"), model_weights(reference.out / "model"))
    assert_same_tensors(checkpoint_weights(out, total), checkpoint_weights(reference.out, total))
    assert_same_history(trainer_state(out, total)["history"], trainer_state(reference.out, total)["history"])
    # the held-out evaluations: the resumed run kept the initial one and computed the same final one
    for when in ("eval_before", "eval_after"):
        # (as JSON text: a NaN standard error equals itself there)
        resumed, uninterrupted = outcome["stages"][0][when], reference.outcome["stages"][0][when]
        assert json.dumps(resumed, sort_keys=True) == json.dumps(uninterrupted, sort_keys=True)


def test_lora_resume_after_a_crash_equals_the_uninterrupted_run(lora_run: Run, out_dir: Path) -> None:
    # step 2 is inside the warm-up: the scheduler and optimizer states must come back too
    _crash_and_resume(lora_run, out_dir, crash_at=2, checkpoint_at=2)
    # the merged weights of the resumed run too
    assert_same_tensors(model_weights(out_dir / "merged"), model_weights(lora_run.out / "merged"))


def test_full_fine_tuning_resume_redoes_lost_steps_exactly(full_run: Run, out_dir: Path) -> None:
    # checkpoints every 2 steps: the crash after step 3 loses step 3, which the resumed run redoes
    _crash_and_resume(full_run, out_dir, crash_at=3, checkpoint_at=2)


@pytest.mark.slow
def test_cli_resume_after_sigkill_equals_the_uninterrupted_run(lora_run: Run, out_dir: Path) -> None:
    args = [o for o in lora_run.overrides if not o.startswith("output_dir=")] + [f"output_dir={out_dir}"]
    checkpoint = out_dir / "checkpoints" / "step-000002"
    log = out_dir.parent / "killed.log"
    with log.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [EXE, "train", *args],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=subprocess_env(),
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while not checkpoint.is_dir():
                assert process.poll() is None, f"the run ended before its first checkpoint:\n{log.read_text()}"
                assert time.monotonic() < deadline, "no checkpoint in time"
                time.sleep(0.02)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (out_dir / "model").exists(), "killed too late: the run had finished"

    result = run_cli("train", *args, "--resume")

    assert result.returncode == 0, result.stderr
    assert_same_tensors(model_weights(out_dir / "model"), model_weights(lora_run.out / "model"))
    assert_same_history(trainer_state(out_dir, 6)["history"], trainer_state(lora_run.out, 6)["history"])


def test_a_second_run_into_a_folder_with_checkpoints_is_refused(lora_run: Run) -> None:
    config_before = (lora_run.out / "run_config.json").read_bytes()
    with pytest.raises(PreftuneError, match="holds checkpoints of an earlier run: resume it with --resume"):
        train(lora_run.overrides)
    # refused before anything of the earlier run is rewritten
    assert (lora_run.out / "run_config.json").read_bytes() == config_before
