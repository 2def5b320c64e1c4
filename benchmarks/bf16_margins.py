"""How far a bf16 run's per-step margins and held-out metrics are from a float32 run's, same seed.

    .venv/bin/python benchmarks/bf16_margins.py --model smollm2-135m-instruct --out out/bench/bf16

Trains LoRA DPO at TRL's settings (β 0.1, lr 5e-6, batch 4, no warm-up) on made-up conversational
pairs, once with ``optim.mixed_precision=no`` and once with ``bf16`` (forced, so it runs on any
CPU; only a CPU with AMX or AVX-512 BF16 makes it faster), and prints, per step, the margin the
loss saw in each run and their difference, then the held-out accuracy and margin each run
reported and the seconds per step of each. Run it with ``PYTHONPATH`` pointing at another
checkout's ``src`` to measure that version the same way (the "before" of docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path


def made_up_pairs(path: Path, n: int, seed: int = 0) -> Path:
    """TRL's conversational format: a sum asked, the right answer against a hedge with a wrong one."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Question {i}: what is {a} plus {b}? Answer briefly."}],
                "chosen": [{"role": "assistant", "content": f"{a} plus {b} is {a + b}."}],
                "rejected": [{"role": "assistant", "content": f"I am not sure, maybe {a + b + rng.randint(1, 9)}."}],
            }
        )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--held-out", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-6)
    parser.add_argument("--out", type=Path, default=Path("out/bench/bf16"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = made_up_pairs(args.out / "pairs.jsonl", args.pairs)
    margins: dict[str, list[float]] = {}
    results: dict[str, dict] = {}
    for precision in ("no", "bf16"):
        steps: list[float] = []
        seconds: list[float] = []

        def record(step: int, stats: dict[str, float], steps=steps, seconds=seconds) -> None:
            steps.append(stats.get("margin", float("nan")))
            seconds.append(time.perf_counter())

        results[precision] = run_with(precision, args, data, record)
        margins[precision] = steps
        gaps = [b - a for a, b in itertools.pairwise(seconds)]  # the first step also pays for warm-up
        results[precision]["step_seconds"] = statistics.median(gaps) if gaps else float("nan")
    report(margins, results)
    (args.out / "result.json").write_text(json.dumps({"margins": margins, "results": results}, indent=1, default=str))


def run_with(precision: str, args: argparse.Namespace, data: Path, callback: Callable[[int, dict], None]) -> dict:
    """One training run; its held-out accuracy and margin after the last step."""
    from preftune.cli.config import load_config
    from preftune.modeling import precision as hardware
    from preftune.run.train import run_training
    from preftune.training import forget_accelerator_state

    hardware.auto_mixed_precision = lambda: "bf16"  # only "auto" asks; "bf16" below is taken as given
    forget_accelerator_state()
    out = args.out / precision
    overrides = [
        f"model.name={args.model}",
        "objective=dpo",
        f"output_dir={out}",
        f"data.train={data}",
        f"data.eval_size={args.held_out}",
        "lora.rank=8",
        "lora.alpha=16",
        f"optim.lr={args.lr}",
        "optim.batch_size=4",
        f"optim.max_steps={args.steps}",
        "optim.warmup_ratio=0",
        "eval.batch_size=8",
        "eval.samples=0",
        "trackers=[]",
        f"optim.mixed_precision={precision}",
        "merge_lora=false",
    ]
    outcome = run_training(load_config(None, overrides), callbacks=[callback])
    after = outcome["stages"][-1]["eval_after"]
    return {name: after[name] for name in ("accuracy", "margin") if name in after}


def report(margins: dict[str, list[float]], results: dict[str, dict]) -> None:
    fp32, bf16 = margins["no"], margins["bf16"]
    print("step  margin fp32   margin bf16   |bf16 - fp32|")
    for step, (a, b) in enumerate(zip(fp32, bf16, strict=True), start=1):
        print(f"{step:>4}  {a:>11.4f}   {b:>11.4f}   {abs(b - a):>11.4f}")
    gaps = [abs(b - a) for a, b in zip(fp32, bf16, strict=True)]
    print(
        f"mean |gap| {statistics.fmean(gaps):.4f}, max {max(gaps):.4f}, mean |fp32 margin| "
        f"{statistics.fmean(abs(a) for a in fp32):.4f}"
    )
    for precision, result in results.items():
        acc, margin = result["accuracy"], result["margin"]
        shown = f"{margin['mean']:.4f} ± {margin['stderr']:.4f}; {result['step_seconds']:.2f} s/step (median)"
        print(f"{precision:>4}: held-out accuracy {acc['mean']:.4f} ± {acc['stderr']:.4f}, margin {shown}")


if __name__ == "__main__":
    main()
