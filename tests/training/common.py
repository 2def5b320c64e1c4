"""Shared pieces of the trainer tests: small data files in TRL's formats, run configs on the tiny
model, a trained-run cache, and readers for what a run leaves on disk.

Every run here trains the tiny random Llama (``tiny-random``) on a few dozen synthetic pairs, a
few steps at a time, so the whole suite stays within a few minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

BIN = Path(sys.executable).parent
EXE = str(BIN / "preftune")
TORCHRUN = str(BIN / "torchrun")
TIMEOUT = 300  # seconds: a hung subprocess fails its test instead of the whole session


# --- data -----------------------------------------------------------------------------------------


def _triples(n: int, seed: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    words = "please note that this is simple arithmetic and the result is exact as always".split()
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        filler = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
        prompt = f"Question {i}: what is {a} plus {b}? Answer briefly."
        chosen = f"{a} plus {b} is {a + b}. {filler}".strip()
        rejected = f"I am not sure, maybe {a + b + rng.randint(1, 9)}. {filler[: rng.randint(0, 20)]}".strip()
        rows.append((prompt, chosen, rejected))
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_text_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """TRL's standard (explicit prompt) format: ``prompt``, ``chosen``, ``rejected`` strings."""
    return write_jsonl(path, [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in _triples(n, seed)])


def write_conversational_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """TRL's conversational format: message lists, the prompt ending with a user turn."""
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in _triples(n, seed)
    ]
    return write_jsonl(path, rows)


@dataclass(frozen=True)
class DataFiles:
    train: Path  # 24 text pairs
    eval: Path  # 8 text pairs
    conv_train: Path  # 24 conversational pairs
    conv_eval: Path  # 8 conversational pairs


def make_data_files(folder: Path) -> DataFiles:
    folder.mkdir(parents=True, exist_ok=True)
    return DataFiles(
        train=write_text_pairs(folder / "train.jsonl", 24, seed=1),
        eval=write_text_pairs(folder / "eval.jsonl", 8, seed=2),
        conv_train=write_conversational_pairs(folder / "conv_train.jsonl", 24, seed=3),
        conv_eval=write_conversational_pairs(folder / "conv_eval.jsonl", 8, seed=4),
    )


# --- configs --------------------------------------------------------------------------------------

# The runs here compare runs at tight tolerances (layouts, one process against two, resumed against
# uninterrupted, the saved model re-scored by `preftune evaluate` in float32), so they train in
# float32 whatever the CPU: `optim.mixed_precision=auto` would choose bf16 on one with AMX or
# AVX-512 BF16. A test about precision sets it after these (a later override wins).
FP32 = {"optim.mixed_precision": "no"}


def online_overrides(out: Path | None = None, changes: dict[str, Any] | None = None) -> list[str]:
    """A tiny on-policy run (``preftune train`` key=value overrides): 2 rounds of 4 prompts × 3 samples
    of ≤ 8 tokens from bundled HH prompts, ``reinforce``, 2 groups a step, 4 held-out pairs;
    ``changes`` replace or add settings, ``out`` is the output folder."""
    settings: dict[str, Any] = {
        "model.name": "tiny-random",
        "data.train": "bundled:hh-harmless",
        "data.train_size": 24,
        "data.eval_size": 4,
        "data.max_length": 256,
        "online.rounds": 2,
        "online.prompts_per_round": 4,
        "sampling.n": 3,
        "sampling.max_new_tokens": 8,
        "optim.batch_size": 2,
        "objective": "reinforce",
        "trackers": "[]",
        **FP32,
    }
    settings.update(changes or {})
    if out is not None:
        settings["output_dir"] = str(out)
    return [f"{k}={v}" for k, v in settings.items()]


def lora_overrides(data: DataFiles, out: Path, **extra: Any) -> list[str]:
    """LoRA, ``dpo + exmate``, a separate eval file, 6 steps of 4 pairs (1.5 epochs of 16 pairs),
    3 warm-up steps then cosine decay, a checkpoint every 2 steps, adapter and merged outputs."""
    settings: dict[str, Any] = {
        "model.name": "tiny-random",
        "objective": "dpo + exmate",
        "output_dir": str(out),
        "data.train": str(data.train),
        "data.eval": str(data.eval),
        "data.train_size": 16,
        "data.max_length": 64,
        "lora.rank": 4,
        "lora.alpha": 8,
        "optim.lr": 1e-2,
        "optim.batch_size": 4,
        "optim.max_steps": 6,
        "optim.warmup_ratio": 0.34,
        "optim.schedule": "cosine",
        "eval.batch_size": 8,
        "save_every": 2,
        "merge_lora": "true",
        "trackers": "[]",
        **FP32,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def full_overrides(data: DataFiles, out: Path, **extra: Any) -> list[str]:
    """Full fine-tuning, ``dpo + exmate``, 8 pairs of the training file held out, 4 steps of 4 pairs."""
    settings: dict[str, Any] = {
        "model.name": "tiny-random",
        "objective": "dpo + exmate",
        "output_dir": str(out),
        "data.train": str(data.train),
        "data.eval_size": 8,
        "data.max_length": 64,
        "lora.enabled": "false",
        "optim.lr": 1e-3,
        "optim.batch_size": 4,
        "optim.max_steps": 4,
        "optim.warmup_ratio": 0.25,
        "optim.schedule": "cosine",
        "eval.batch_size": 8,
        "save_every": 2,
        "trackers": "[]",
        **FP32,
    }
    settings.update(extra)
    return [f"{k}={v}" for k, v in settings.items()]


def train(overrides: Sequence[str], callbacks: Sequence[Any] = (), config_file: Path | None = None) -> dict:
    """Run the trainer in this process, as ``preftune train [CONFIG] OVERRIDES`` would, in float32
    unless ``overrides`` set ``optim.mixed_precision`` (the pin comes first, so it also covers a
    ``config_file`` written by a test, and outranks a precision set there)."""
    from preftune.cli.config import load_config
    from preftune.run.train import run_training

    pin = [f"{k}={v}" for k, v in FP32.items()]
    return run_training(load_config(config_file, [*pin, *overrides]), callbacks=callbacks)


@dataclass(frozen=True)
class Run:
    out: Path
    overrides: list[str]
    outcome: dict


# --- reading a run's outputs ----------------------------------------------------------------------


def model_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a saved model folder (a LoRA adapter or full weights)."""
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors in {folder}"
    weights: dict[str, torch.Tensor] = {}
    for file in files:
        weights.update(load_file(str(file)))
    return weights


def checkpoint_weights(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "checkpoints" / f"step-{step:06d}" / "trainable.safetensors"))


def trainer_state(run_dir: Path, step: int) -> dict:
    path = run_dir / "checkpoints" / f"step-{step:06d}" / "trainer_state.json"
    return json.loads(path.read_text(encoding="utf-8"))


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if atol == 0.0:
            assert torch.equal(a[name], b[name]), f"{name}: max diff {(a[name] - b[name]).abs().max():.3g}"
        else:
            torch.testing.assert_close(a[name], b[name], atol=atol, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def assert_same_history(a: list[dict], b: list[dict], atol: float = 0.0, rtol: float = 0.0) -> None:
    """Per-step histories equal (to ``atol`` + ``rtol`` of the value), except the timings; NaN equals NaN."""
    assert [h["step"] for h in a] == [h["step"] for h in b]
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            if key in ("tokens_per_s", "step_s"):
                continue
            tx, ty = torch.tensor(x[key], dtype=torch.float64), torch.tensor(y[key], dtype=torch.float64)
            assert torch.allclose(tx, ty, atol=atol, rtol=rtol, equal_nan=True), f"step {x['step']} {key}: {tx} vs {ty}"


def metric_means(evals: dict) -> dict[str, float]:
    return {k: v["mean"] for k, v in evals.items() if isinstance(v, dict) and "mean" in v}


# --- subprocesses ---------------------------------------------------------------------------------


def subprocess_env(threads: int = 1, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ) | (extra or {})
    env.update(
        OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false"
    )
    env.pop("WORLD_SIZE", None)
    return env


def run_cli(
    *args: str, timeout: float = TIMEOUT, threads: int = 1, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``preftune ARGS`` in a subprocess; ``env``: variables to set on top of this process's."""
    return subprocess.run(
        [EXE, *args], capture_output=True, text=True, timeout=timeout, env=subprocess_env(threads, env), cwd=BIN.parent
    )


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


FSDP_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_reshard_after_forward: true
mixed_precision: 'no'
num_machines: 1
num_processes: 2
use_cpu: true
"""


def fsdp_launch(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``accelerate launch`` with an FSDP config (2 CPU processes on gloo) of ``args`` (a script or
    ``-m module`` and its arguments); the config is written in ``folder``."""
    config = folder / "fsdp.yaml"
    config.write_text(FSDP_CONFIG)
    command = [str(BIN / "accelerate"), "launch", "--config_file", str(config), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, env=subprocess_env(1))
    except subprocess.TimeoutExpired as err:
        raise AssertionError(f"accelerate launch did not finish in {TIMEOUT} s:\n{err.stderr}") from err
