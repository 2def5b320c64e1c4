"""Throughput and peak memory of preftune's trainer against TRL's ``DPOTrainer``, on identical work.

Both sides train the same model (:mod:`workloads`: ``tiny``, ``smollm2-lora``, ``smollm2-full``) on the same pairs
(the first ``steps * batch`` usable HH-RLHF harmless pairs, visited in order), with the same batch size, maximum
length, objective (DPO, sigmoid loss, β = 0.1), learning rate (5e-6) and number of optimiser steps, no gradient
accumulation, no activation checkpointing, and the same precision (``--precision``, one or both of):

- ``fp32``: float32 weights and arithmetic throughout (the default on the CPU);
- ``bf16``: autocast mixed precision, bfloat16 matrix products over float32 weights, which are also the optimiser's
  master weights (the default on CUDA). preftune: ``Accelerator(mixed_precision="bf16")`` and
  ``OptimConfig(mixed_precision="bf16")``, as ``preftune train`` sets up for ``optim.mixed_precision: bf16``; TRL:
  ``bf16=True`` in its ``DPOConfig`` (with ``use_cpu=True`` off CUDA, where transformers requires it for bf16). Both
  load the weights in float32. A forward hook on each model's embeddings records the autocast state of every
  forward (``forwards_by_precision``) and a child fails if any ran in another precision than the one asked for.

Each (workload, precision) is its own comparison: ratios are to TRL in the same precision and repeat.

What is timed: the training steps only. ``seconds`` runs from the start of step 1 to the end of the last step (TRL: a
``TrainerCallback``'s ``on_step_begin`` of the first step to ``on_step_end`` of the last, ``time.perf_counter``, the
CUDA stream synchronised first); ``step_seconds`` are the steps one by one. A step is the policy's forward and backward
on chosen and rejected, the reference model's forward on both (TRL runs it inside every step, under ``no_grad``:
a frozen copy of the model for full fine-tuning, the same model with its adapter disabled for LoRA), the loss,
gradient clipping and the optimiser update. So reference work counts as training time on both sides; preftune also
reports ``reference_seconds``, and the TRL side times its no-grad forwards with module hooks for the same figure.
(transformers' ``Trainer`` fetches and collates a step's batch just before ``on_step_begin``: collation is inside
``seconds`` for steps 2 onwards, outside ``step_seconds``, and negligible next to a step.) Loading the model, tokenising
and building the trainer (TRL's reference copy included) is ``setup_seconds``, not part of the throughput; importing
torch, transformers and TRL is ``import_seconds``, apart. ``pairs/s`` is ``pairs / seconds``; ``tokens/s`` counts the
non-padding tokens of prompt + chosen and prompt + rejected after truncation.

Why subprocesses: each measurement runs in a fresh Python process (``--child``), so its peak resident set
(``ru_maxrss``) is its own and not the high-water mark of earlier runs, no allocator cache or thread pool is shared,
and one side's imports do not tax the other's memory. The parent alternates the sides, preftune then TRL, repeat after
repeat (A B A B ..., each precision in turn within a repeat), so slow drifts of the machine (thermal state, a
neighbour's load) fall on both, and reports each preftune/TRL ratio within a repeat as min, median and max over
repeats.

Useful FLOP/s: ``useful_flops`` (``preftune_side.useful_flops``) counts the work itself, the same for both sides: one
reference forward and one training step per pair, each prompt once, no padding, the LM head on response tokens only,
attention over the positions a token attends to; each side counts it from its own tokens after truncation.
``useful_gflop_per_s`` is that over ``seconds``. A ``torch.mm`` child runs first and gives the best GFLOP/s of
2048 x 2048 products in float32 and in bfloat16 (CPU, and the GPU with CUDA: best of a few timed rounds); each run's
``matmul_fraction`` is its useful GFLOP/s over the matmul of its own precision and device, so runs on different
machines, and fp32 against bf16, compare on how much of the machine they use.

Why ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` (4 GiB, set for both sides): glibc serves allocations
above its mmap threshold (dynamic, at most 32 MiB on 64-bit) with fresh ``mmap`` calls and unmaps them on free, so the
kernel zeroes new pages on every step. Large logit buffers are such allocations: TRL 1.16's fused LM head, off
CUDA/XPU, scores every position in tiles of up to 4096 tokens x 32768 vocabulary entries (float32: 512 MiB a tile
buffer), allocated afresh in each forward and backward, and a plain head's ``[2B, T, vocab]`` logits are larger still.
On this machine returning those buffers to the OS and faulting them back in dominated TRL's CPU time (system time).
With both thresholds raised, freed memory stays in the heap for reuse, at the cost of a higher resident set.
``--no-malloc-env`` removes the two variables, to measure glibc's defaults.

Run (the whole comparison; ``--sides``, ``--variants``, ``--steps`` narrow or extend it)::

    .venv/bin/python benchmarks/compare_trl.py --workloads tiny,smollm2-lora,smollm2-full --repeats 3
    .venv/bin/python benchmarks/compare_trl.py --workloads tiny --repeats 1 --precision fp32,bf16

A single measurement, printing one ``RESULT {json}`` line on stdout::

    .venv/bin/python benchmarks/compare_trl.py --child trl --workload tiny --steps 2 --seed 0 --precision bf16
    .venv/bin/python benchmarks/compare_trl.py --child matmul

Results: a table on stdout, JSON at ``--out`` (default ``out/bench/compare_trl.json``) and a Markdown table beside it
(``compare_trl.md``), both written atomically (``preftune.files.write_atomic``) after every measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from workloads import (  # noqa: E402  (the folder above is put on the path first)
    BETA,
    LEARNING_RATE,
    LORA_ALPHA,
    LORA_DROPOUT,
    LORA_R,
    LORA_TARGET_MODULES,
    PRECISIONS,
    WORKLOADS,
    AutocastProbe,
    Workload,
    benchmark_pairs,
    check_precision,
    default_precision,
    get_workload,
)

from preftune.files import write_atomic  # noqa: E402

RESULT_PREFIX = "RESULT "
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
# No network here, and nothing should be fetched: keep the hub client offline and quiet in the children.
CHILD_ENV_DEFAULTS = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false"}
MATMUL_N = 2048
MATMUL_SECONDS = 3.0  # per dtype and device, over all timed rounds
MATMUL_ROUNDS = 5
MATMUL_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}
STDERR_TAIL_LINES = 25
GB = 1e9


# ------------------------------------------------------------------------------------------------------ child: TRL


class _StepTimer:
    """Wall-clock times of each optimiser step (``on_step_begin`` to ``on_step_end``), CUDA synchronised.

    A plain object with the two hooks ``TrainerCallback`` dispatches on; :func:`run_trl` mixes it into a real
    ``TrainerCallback`` so that the module does not import transformers until a child needs it.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.begins: list[float] = []
        self.ends: list[float] = []

    def _now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.begins.append(self._now())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(self._now())


class _NoGradForwardTimer:
    """Time spent in forwards run under ``no_grad`` during training steps: TRL's reference forwards.

    Hooks only observe. For full fine-tuning they sit on TRL's reference copy; for LoRA on the policy itself, whose
    reference forward (adapter disabled) is its only call with gradients off during a training step.
    """

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.seconds = 0.0
        self.calls = 0
        self._start: float | None = None
        self._handles: list[Any] = []

    def attach(self, module: Any) -> None:
        self._handles.append(module.register_forward_pre_hook(self._pre))
        self._handles.append(module.register_forward_hook(self._post))

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def _pre(self, module: Any, args: Any) -> None:
        import torch

        if not torch.is_grad_enabled():
            self._sync()
            self._start = time.perf_counter()

    def _post(self, module: Any, args: Any, output: Any) -> None:
        if self._start is not None:
            self._sync()
            self.seconds += time.perf_counter() - self._start
            self.calls += 1
            self._start = None


def trl_config_kwargs(
    workload: Workload, steps: int, seed: int, output_dir: str, cuda: bool, precision: str
) -> dict[str, Any]:
    """``DPOConfig`` keyword arguments for a workload, adapted to the installed TRL's field names.

    TRL 1.16 has no ``max_prompt_length`` (it truncates prompt + response together, keeping the start), defaults
    ``bf16`` to True even on CPU (so it is set explicitly: bf16 autocast for ``precision="bf16"``, off for ``fp32``)
    and ``gradient_checkpointing`` to True; transformers 5 calls that option ``activation_checkpointing`` and keeps the
    old name as a deprecated alias. Off CUDA ``use_cpu=True``, which transformers also requires for ``bf16`` on a CPU.
    """
    import trl

    fields = {f.name for f in dataclasses.fields(trl.DPOConfig)}
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "per_device_train_batch_size": workload.batch_size,
        "gradient_accumulation_steps": 1,
        "max_steps": steps,
        "learning_rate": LEARNING_RATE,
        "beta": BETA,
        "loss_type": "sigmoid",
        "max_length": workload.max_length,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": 10**6,
        "use_cpu": not cuda,
        "bf16": precision == "bf16",
        "fp16": False,
        "dataloader_num_workers": 0,
        "seed": seed,
        "precompute_ref_log_probs": False,
        "gradient_checkpointing": False,
        "disable_tqdm": True,
    }
    if "activation_checkpointing" in fields:
        kwargs["activation_checkpointing"] = False
    if "max_prompt_length" in fields:
        kwargs["max_prompt_length"] = workload.max_prompt_length
    if "train_sampling_strategy" in fields:
        kwargs["train_sampling_strategy"] = "sequential"
    if not cuda:
        kwargs["dataloader_pin_memory"] = False  # nothing to pin for; avoids a warning
    return kwargs


def run_trl(workload: Workload, steps: int, seed: int, precision: str) -> dict[str, Any]:
    """Train ``steps`` steps with TRL's ``DPOTrainer`` in this process; the result fields (see the module docstring).

    The weights are loaded in float32 in either precision: with ``bf16`` TRL's accelerator autocasts the forwards
    (policy and reference), so the master weights stay float32 as on the preftune side."""
    start = time.perf_counter()
    import torch
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import_seconds = time.perf_counter() - start
    start = time.perf_counter()
    from preftune_side import useful_flops

    class StepTimer(_StepTimer, TrainerCallback):
        pass

    class SequentialDPOTrainer(trl.DPOTrainer):
        """Visits the pairs in dataset order (only needed where ``train_sampling_strategy`` is missing)."""

        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return SequentialSampler(train_dataset if train_dataset is not None else self.train_dataset)

    cuda = torch.cuda.is_available()
    torch.manual_seed(seed)
    path = workload.model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    pairs = benchmark_pairs(workload, steps, tokenizer)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if cuda:
        model = model.to("cuda")
    peft_config = (
        LoraConfig(
            r=LORA_R,
            lora_alpha=LORA_ALPHA,
            lora_dropout=LORA_DROPOUT,
            target_modules=LORA_TARGET_MODULES,
            task_type="CAUSAL_LM",
        )
        if workload.lora
        else None
    )
    timer = StepTimer(cuda)
    ref_timer = _NoGradForwardTimer(cuda)
    probe = AutocastProbe()
    with tempfile.TemporaryDirectory(prefix="compare-trl-") as output_dir:
        args = trl.DPOConfig(**trl_config_kwargs(workload, steps, seed, output_dir, cuda, precision))
        trainer_class = trl.DPOTrainer if hasattr(args, "train_sampling_strategy") else SequentialDPOTrainer
        trainer = trainer_class(
            model=model,
            ref_model=None,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[timer],
        )
        data = trainer.train_dataset
        if len(data) != len(pairs):
            raise RuntimeError(f"TRL kept {len(data)} of the {len(pairs)} pairs (it drops prompts >= max_length)")
        length = workload.max_length
        # Tokens after TRL's truncation: prompt + response cut to max_length, keeping the start (the prompt is at
        # most half of it, so only a response is ever cut).
        lengths = [
            (len(p), min(len(c), length - len(p)), min(len(r), length - len(p)))
            for p, c, r in zip(data["prompt_ids"], data["chosen_ids"], data["rejected_ids"], strict=True)
        ]
        tokens = sum(2 * p + c + r for p, c, r in lengths)
        flops = useful_flops(trainer.model, lengths, lora=workload.lora)
        ref_timer.attach(trainer.ref_model if trainer.ref_model is not None else trainer.model)
        probe.attach(trainer.model)
        if trainer.ref_model is not None:
            probe.attach(trainer.ref_model)
        trainer.train()

    if len(timer.begins) != steps or len(timer.ends) != steps:
        raise RuntimeError(f"expected {steps} steps, timed {len(timer.begins)} begins and {len(timer.ends)} ends")
    if ref_timer.calls != steps:
        raise RuntimeError(f"expected {steps} reference forwards, saw {ref_timer.calls}")
    forwards = probe.check(precision)
    seconds = timer.ends[-1] - timer.begins[0]
    return {
        "side": "trl",
        "workload": workload.name,
        "variant": "default",
        "precision": precision,
        "steps": steps,
        "pairs": steps * workload.batch_size,
        "tokens": tokens,
        "seconds": seconds,
        "step_seconds": [end - begin for begin, end in zip(timer.begins, timer.ends, strict=True)],
        "setup_seconds": timer.begins[0] - start,
        "import_seconds": import_seconds,
        "reference_seconds": ref_timer.seconds,
        "useful_flops": flops,
        "useful_gflop_per_s": flops / seconds / 1e9,
        "forwards_by_precision": forwards,
        "optim": str(args.optim),
        "versions": {name: _version(name) for name in ("trl", "transformers", "torch", "peft")},
    }


# --------------------------------------------------------------------------------------------------- child: matmul


def run_matmul(n: int = MATMUL_N, seconds: float = MATMUL_SECONDS, rounds: int = MATMUL_ROUNDS) -> dict[str, Any]:
    """``torch.mm`` of two n x n matrices in float32 and in bfloat16, on the CPU and, with CUDA, on the GPU.

    For each dtype and device: three products to warm up, then ``rounds`` timed rounds of at least ``seconds /
    rounds`` (and two products) each; GFLOP/s counts 2 n³ per product, and ``gflops`` is the best round, the most
    this machine does in that precision (``median_gflops`` beside it shows how steady it was). ``cpu`` and ``cuda``
    map ``fp32``/``bf16`` to those figures (``cuda`` is None without a GPU)."""
    import torch

    def measure(device: str, dtype: torch.dtype) -> dict[str, Any]:
        g = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        for _ in range(3):
            torch.mm(a, b, out=out)
        sync()
        rates, total_reps, total_seconds = [], 0, 0.0
        for _ in range(rounds):
            reps, begin = 0, time.perf_counter()
            while reps < 2 or time.perf_counter() - begin < seconds / rounds:
                torch.mm(a, b, out=out)
                reps += 1
                if device == "cuda" and reps % 50 == 0:
                    sync()
            sync()
            elapsed = time.perf_counter() - begin
            rates.append(2 * n**3 * reps / elapsed / 1e9)
            total_reps, total_seconds = total_reps + reps, total_seconds + elapsed
        return {
            "gflops": max(rates),
            "median_gflops": statistics.median(rates),
            "round_gflops": rates,
            "reps": total_reps,
            "seconds": total_seconds,
        }

    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    result: dict[str, Any] = {"side": "matmul", "n": n, "rounds": rounds, "cpu": None, "cuda": None}
    for device in devices:
        result[device] = {name: measure(device, getattr(torch, dtype)) for name, dtype in MATMUL_DTYPES.items()}
    return result


def matmul_gflops(matmul: dict[str, Any] | None, device: str | None, precision: str | None) -> float | None:
    """The best ``torch.mm`` GFLOP/s of ``precision`` on ``device`` from the matmul child's result (None if unknown)."""
    if not matmul or "error" in matmul or device is None or precision is None:
        return None
    return ((matmul.get(device) or {}).get(precision) or {}).get("gflops")


# ------------------------------------------------------------------------------------------------------ child: main


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def peak_rss_bytes() -> int:
    """This process's peak resident set (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_child(
    side: str, workload_name: str | None, steps: int | None, seed: int, variant: str, precision: str | None
) -> dict[str, Any]:
    """One measurement in this process; adds the fields common to every side (peaks, threads, environment).

    ``precision``: ``fp32`` or ``bf16`` (None: bf16 on CUDA, fp32 on the CPU).

    ``peak_rss_bytes`` and ``peak_gpu_bytes`` are read here, after the run, for both sides alike: the process's
    high-water marks over its whole life (imports, setup and training).
    """
    for key, value in CHILD_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if side == "matmul":
        result = run_matmul()
    else:
        if workload_name is None:
            raise SystemExit("--child trl/preftune needs --workload")
        workload = get_workload(workload_name)
        steps = workload.steps if steps is None else steps
        if precision is None:
            import torch

            precision = default_precision(torch.cuda.is_available())
        check_precision(precision)
        if side == "trl":
            if variant != "default":
                raise SystemExit(f"the TRL side has only the 'default' variant, not '{variant}'")
            result = run_trl(workload, steps, seed, precision)
        elif side == "preftune":
            from preftune_side import run as run_preftune

            result = dict(run_preftune(workload, steps, seed, variant, precision))
            defaults = {"side": "preftune", "workload": workload.name, "variant": variant, "precision": precision}
            for key, value in defaults.items():
                result.setdefault(key, value)
            result.setdefault("steps", steps)
            result.setdefault("pairs", steps * workload.batch_size)
        else:
            raise SystemExit(f"unknown side '{side}'")

    import torch

    result["peak_rss_bytes"] = peak_rss_bytes()
    result["peak_gpu_bytes"] = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    if side != "matmul":
        result["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    result["threads"] = torch.get_num_threads()
    result["seed"] = seed
    result["env"] = {key: os.environ.get(key) for key in (*MALLOC_ENV, "OMP_NUM_THREADS")}
    return result


# ------------------------------------------------------------------------------------------------------------ parent


@dataclasses.dataclass(frozen=True)
class Job:
    """One child run: a side (and preftune variant) of a workload in a repeat, or the matmul calibration."""

    side: str
    workload: str | None = None
    variant: str = "default"
    repeat: int = 0
    steps: int | None = None
    precision: str | None = None

    @property
    def label(self) -> str:
        if self.side == "matmul":
            return "matmul"
        name = self.side if self.variant == "default" else f"{self.side}:{self.variant}"
        return f"{self.workload} {self.precision} {name} repeat {self.repeat}"

    def argv(self, seed: int) -> list[str]:
        args = [sys.executable, str(Path(__file__).resolve()), "--child", self.side, "--seed", str(seed)]
        if self.workload is not None:
            args += ["--workload", self.workload, "--variant", self.variant]
        if self.precision is not None:
            args += ["--precision", self.precision]
        if self.steps is not None:
            args += ["--steps", str(self.steps)]
        return args


def child_env(malloc_env: bool) -> dict[str, str]:
    """The parent's environment (``OMP_NUM_THREADS`` as inherited), with the malloc thresholds set or removed."""
    env = dict(os.environ)
    for key, value in MALLOC_ENV.items():
        if malloc_env:
            env[key] = value
        else:
            env.pop(key, None)
    for key, value in CHILD_ENV_DEFAULTS.items():
        env.setdefault(key, value)
    return env


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The last ``RESULT {json}`` line of a child's stdout."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return None


def one_line(text: str, limit: int = 300) -> str:
    """The last non-empty line of ``text`` (usually the exception), shortened."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else "no output"
    return last if len(last) <= limit else last[: limit - 3] + "..."


def run_job(job: Job, seed: int, env: dict[str, str], timeout: float | None) -> dict[str, Any]:
    """Run one child; its result, or a failure record ``{"error": one line, ...}`` after printing its stderr tail."""
    record = {
        "side": job.side,
        "workload": job.workload,
        "variant": job.variant,
        "precision": job.precision,
        "repeat": job.repeat,
    }
    try:
        proc = subprocess.run(job.argv(seed), env=env, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as e:
        stderr = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        _print_tail(stderr)
        return {**record, "error": f"timed out after {timeout:.0f} s", "returncode": None}
    result = parse_result(proc.stdout) if proc.returncode == 0 else None
    if result is None:
        _print_tail(proc.stderr)
        why = one_line(proc.stderr) if proc.returncode else "no RESULT line on stdout"
        return {**record, "error": why, "returncode": proc.returncode}
    return {**result, "repeat": job.repeat}


def _print_tail(stderr: str) -> None:
    tail = stderr.rstrip().splitlines()[-STDERR_TAIL_LINES:]
    for line in tail:
        print(f"    | {line}", file=sys.stderr)
    sys.stderr.flush()


def plan_jobs(
    workloads: Sequence[str],
    repeats: int,
    sides: Sequence[str],
    variants: Sequence[str],
    steps: int | None,
    precisions: Sequence[str],
) -> list[Job]:
    """Matmul first, then per workload, repeat and precision: preftune, TRL (A B), then each extra preftune variant."""
    jobs = [Job("matmul")]
    for name in workloads:
        for repeat in range(1, repeats + 1):
            for precision in precisions:
                for side in ("preftune", "trl"):
                    if side in sides:
                        jobs.append(Job(side, name, "default", repeat, steps, precision))
                if "preftune" in sides:
                    jobs.extend(Job("preftune", name, variant, repeat, steps, precision) for variant in variants)
    return jobs


def _rate(result: dict[str, Any], key: str) -> float | None:
    amount, seconds = result.get(key), result.get("seconds")
    return amount / seconds if amount is not None and seconds else None


def _stats(values: Sequence[float]) -> tuple[float, float, float] | None:
    return (min(values), statistics.median(values), max(values)) if values else None


def matmul_fraction(run: dict[str, Any], matmul: dict[str, Any] | None) -> float | None:
    """A run's useful GFLOP/s over the best ``torch.mm`` GFLOP/s of its precision on its device."""
    best = matmul_gflops(matmul, run.get("device"), run.get("precision"))
    useful = run.get("useful_gflop_per_s")
    return useful / best if useful is not None and best else None


def summarise(
    runs: Sequence[dict[str, Any]],
    workloads: Sequence[str],
    variants: Sequence[str],
    precisions: Sequence[str],
    matmul: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per workload, precision and side/variant: medians over repeats, and ratios to TRL of the same
    workload, precision and repeat."""
    ok = [r for r in runs if "error" not in r and r.get("side") in ("preftune", "trl")]
    rows = []
    for name in workloads:
        for precision in precisions:
            here = [r for r in ok if r["workload"] == name and r.get("precision") == precision]
            trl_by_repeat = {r["repeat"]: r for r in here if r["side"] == "trl"}
            labels = [("preftune", "default"), *(("preftune", v) for v in variants), ("trl", "default")]
            for side, variant in labels:
                mine = [r for r in here if r["side"] == side and r.get("variant") == variant]
                if mine:
                    rows.append(_summary_row(name, precision, side, variant, mine, trl_by_repeat, matmul))
    return rows


def _summary_row(
    name: str,
    precision: str,
    side: str,
    variant: str,
    mine: Sequence[dict[str, Any]],
    trl_by_repeat: dict[int, dict[str, Any]],
    matmul: dict[str, Any] | None,
) -> dict[str, Any]:
    pairs_rates = [v for r in mine if (v := _rate(r, "pairs")) is not None]
    token_rates = [v for r in mine if (v := _rate(r, "tokens")) is not None]
    rss = [r["peak_rss_bytes"] for r in mine if r.get("peak_rss_bytes")]
    flops = [r["useful_gflop_per_s"] for r in mine if r.get("useful_gflop_per_s")]
    fractions = [v for r in mine if (v := matmul_fraction(r, matmul)) is not None]
    gpu = [r["peak_gpu_bytes"] for r in mine if r.get("peak_gpu_bytes")]
    speed_ratios, rss_ratios, gpu_ratios = [], [], []
    for r in mine:
        base = trl_by_repeat.get(r["repeat"])
        if base is None:
            continue
        if (a := _rate(r, "pairs")) and (b := _rate(base, "pairs")):
            speed_ratios.append(a / b)
        if r.get("peak_rss_bytes") and base.get("peak_rss_bytes"):
            rss_ratios.append(r["peak_rss_bytes"] / base["peak_rss_bytes"])
        if r.get("peak_gpu_bytes") and base.get("peak_gpu_bytes"):
            gpu_ratios.append(r["peak_gpu_bytes"] / base["peak_gpu_bytes"])
    devices = sorted({r.get("device") or "cpu" for r in mine})
    return {
        "workload": name,
        "precision": precision,
        "side": side,
        "variant": variant,
        "repeats": len(mine),
        "device": ",".join(devices),
        "pairs_per_s": statistics.median(pairs_rates) if pairs_rates else None,
        "tokens_per_s": statistics.median(token_rates) if token_rates else None,
        "peak_rss_gb": statistics.median(rss) / GB if rss else None,
        "useful_gflop_per_s": statistics.median(flops) if flops else None,
        "matmul_fraction": statistics.median(fractions) if fractions else None,
        "matmul_gflops": matmul_gflops(matmul, devices[0], precision) if len(devices) == 1 else None,
        "peak_gpu_gb": statistics.median(gpu) / GB if gpu else None,
        "ratio_pairs_per_s": _stats(speed_ratios),
        "ratio_peak_rss": _stats(rss_ratios),
        "ratio_peak_gpu": _stats(gpu_ratios),
    }


def _fmt(value: float | None, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _fmt_stats(stats: Sequence[float] | None) -> str:
    return "—" if not stats else " / ".join(f"{v:.2f}" for v in stats)


def table(rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the results table (a GPU memory column only when some run had CUDA)."""
    gpu = any(row["peak_gpu_gb"] is not None for row in rows)
    header = ["workload", "precision", "side/variant", "pairs/s", "tokens/s", "peak RSS GB"]
    header += ["peak GPU GB"] if gpu else []
    header += ["pairs/s ÷ TRL (min/med/max)", "RSS ÷ TRL (min/med/max)", "useful GFLOP/s", "% of matmul"]
    header += ["GPU mem ÷ TRL (min/med/max)"] if gpu else []
    cells = []
    for row in rows:
        label = row["side"] if row["variant"] == "default" else f"{row['side']}:{row['variant']}"
        line = [row["workload"], row["precision"], f"{label} (n={row['repeats']})", _fmt(row["pairs_per_s"], ".3f")]
        line += [_fmt(row["tokens_per_s"], ".0f"), _fmt(row["peak_rss_gb"], ".2f")]
        line += [_fmt(row["peak_gpu_gb"], ".2f")] if gpu else []
        line += [_fmt_stats(row["ratio_pairs_per_s"]), _fmt_stats(row["ratio_peak_rss"])]
        fraction = row.get("matmul_fraction")
        line += [_fmt(row.get("useful_gflop_per_s"), ".1f")]
        line += ["—" if fraction is None else f"{100 * fraction:.1f}% of {row['precision']}"]
        line += [_fmt_stats(row["ratio_peak_gpu"])] if gpu else []
        cells.append(line)
    return header, cells


def plain_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def markdown_table(header: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def matmul_line(matmul: dict[str, Any] | None) -> str:
    if not matmul or "error" in matmul:
        return "matmul: failed" if matmul else "matmul: not run"
    n = matmul["n"]
    parts = []
    for device in ("cpu", "cuda"):
        if figures := matmul.get(device):
            rates = ", ".join(f"{p} {figures[p]['gflops']:.1f}" for p in MATMUL_DTYPES if p in figures)
            where = f"CPU, {matmul['threads']} threads" if device == "cpu" else "CUDA"
            parts.append(f"{rates} GFLOP/s ({where})")
    return f"matmul: torch.mm {n}x{n}, best of {matmul['rounds']} rounds: " + "; ".join(parts)


def write_outputs(out: Path, report: dict[str, Any], text_table: str, md_table: str) -> Path:
    """The JSON report at ``out`` and the Markdown table beside it (same name, ``.md``); returns the latter."""
    write_atomic(out, json.dumps(report, indent=2) + "\n")
    md_path = out.with_suffix(".md")
    meta = report["meta"]
    steps = ", ".join(f"{name} {n}" for name, n in meta["steps"].items())
    lines = [
        "# preftune vs TRL DPOTrainer\n\n",
        f"{meta['started']}, {meta['machine']}; steps: {steps}; repeats: {meta['repeats']}; ",
        f"precision: {', '.join(meta['precisions'])}; ",
        f"malloc thresholds {'set' if meta['malloc_env'] else 'unset'}.\n\n",
        f"{matmul_line(report['matmul'])}\n\n{md_table}\n",
    ]
    if report["failures"]:
        lines.append("\nFailures:\n\n")
        for f in report["failures"]:
            what = f"{f['workload']} {f.get('precision')} {f['side']}:{f['variant']} repeat {f['repeat']}"
            lines.append(f"- {what}: {f['error']}\n")
    write_atomic(md_path, "".join(lines))
    return md_path


def _elapsed(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:02d}:{secs:02d}"


def parse_precisions(value: str | None) -> list[str]:
    """``--precision``: comma-separated ``fp32``/``bf16``; unset: bf16 on CUDA, fp32 on the CPU."""
    if value is None:
        import torch

        return [default_precision(torch.cuda.is_available())]
    precisions = list(dict.fromkeys(p.strip() for p in value.split(",") if p.strip()))
    if not precisions:
        raise SystemExit(f"--precision: name one or more of {', '.join(PRECISIONS)}")
    return [check_precision(p) for p in precisions]


def run_parent(args: argparse.Namespace) -> int:
    workloads = [w for w in args.workloads.split(",") if w]
    for name in workloads:
        get_workload(name)
    sides = [s for s in args.sides.split(",") if s]
    if unknown := set(sides) - {"preftune", "trl"}:
        raise SystemExit(f"--sides: unknown {sorted(unknown)} (preftune, trl)")
    variants = [v for v in args.variants.split(",") if v and v != "default"]
    precisions = parse_precisions(args.precision)
    env = child_env(not args.no_malloc_env)
    jobs = plan_jobs(workloads, args.repeats, sides, variants, args.steps, precisions)
    out = Path(args.out)
    steps = {name: args.steps or WORKLOADS[name].steps for name in workloads}
    report: dict[str, Any] = {
        "meta": {
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": [sys.executable, *sys.argv],
            "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
            "python": platform.python_version(),
            "versions": {name: _version(name) for name in ("preftune", "torch", "transformers", "trl", "peft")},
            "workloads": {
                name: dataclasses.asdict(WORKLOADS[name]) | {"model_path": WORKLOADS[name].model_path.__name__}
                for name in workloads
            },
            "steps": steps,
            "repeats": args.repeats,
            "sides": sides,
            "variants": variants,
            "precisions": precisions,
            "seed": args.seed,
            "malloc_env": not args.no_malloc_env,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        },
        "matmul": None,
        "runs": [],
        "failures": [],
        "summary": [],
    }
    began = time.perf_counter()
    for index, job in enumerate(jobs, 1):
        print(f"[{index}/{len(jobs)}] {job.label} ... (elapsed {_elapsed(time.perf_counter() - began)})", flush=True)
        result = run_job(job, args.seed, env, args.timeout)
        if "error" in result:
            report["failures"].append(result)
            print(f"    FAILED: {job.label}: {result['error']}", flush=True)
        elif job.side == "matmul":
            report["matmul"] = result
            print(f"    {matmul_line(result)}", flush=True)
        else:
            report["runs"].append(result)
            result["matmul_fraction"] = matmul_fraction(result, report["matmul"])
            rate, gb = _rate(result, "pairs"), result["peak_rss_bytes"] / GB
            line = f"    {rate:.3f} pairs/s, {result['seconds']:.1f} s of steps, peak RSS {gb:.2f} GB"
            line += f", useful {result['useful_gflop_per_s']:.1f} GFLOP/s"
            if result["matmul_fraction"] is not None:
                line += f" ({100 * result['matmul_fraction']:.0f}% of the {result['precision']} matmul)"
            print(line, flush=True)
        report["summary"] = summarise(report["runs"], workloads, variants, precisions, report["matmul"])
        header, cells = table(report["summary"])
        text_table, md_table = plain_table(header, cells), markdown_table(header, cells)
        md_path = write_outputs(out, report, text_table, md_table)
    print(f"\ndone in {_elapsed(time.perf_counter() - began)}\n")
    print(matmul_line(report["matmul"]))
    print(text_table)
    print(f"\nwrote {out} and {md_path}")
    if report["failures"]:
        print(f"{len(report['failures'])} measurement(s) failed", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=("trl", "preftune", "matmul"), help="run one measurement in this process")
    parser.add_argument("--workload", help="(child) the workload to run")
    parser.add_argument("--variant", default="default", help="(child) the preftune variant")
    parser.add_argument("--workloads", default="tiny,smollm2-lora,smollm2-full", help="comma-separated workloads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, help="optimiser steps (default: per workload, tiny 12, smollm2-* 6)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sides", default="preftune,trl", help="comma-separated: preftune, trl")
    parser.add_argument("--variants", default="", help="extra preftune variants, comma-separated, once per repeat")
    parser.add_argument(
        "--precision",
        help="comma-separated: fp32 (float32), bf16 (bf16 autocast over float32 weights); "
        "both sides run each (default: bf16 on CUDA, fp32 on the CPU); a child takes one",
    )
    parser.add_argument("--no-malloc-env", action="store_true", help="leave glibc's malloc thresholds at default")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a child is stopped")
    parser.add_argument("--out", default="out/bench/compare_trl.json", help="JSON report (Markdown beside it)")
    args = parser.parse_args(argv)
    if args.child:
        result = run_child(args.child, args.workload, args.steps, args.seed, args.variant, args.precision)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return 0
    return run_parent(args)


if __name__ == "__main__":
    sys.exit(main())
