"""Size ``make demo`` to this machine: hold out as many pairs as the time budget allows.

What makes the demo's gain significant is the number of held-out pairs. DPO on 160 bundled pairs
lifts held-out preference accuracy to about 0.6 (more training pairs did not raise it), and the
same recipe measured 1.4-1.9 standard errors of gain on 128-160 held-out pairs, 2.4-3.0 on 192-224
and 4.4-4.7 on 384 (docs/benchmarks.md, `make demo`). A held-out pair costs two forward passes (reference, then
the trained policy), and the speed of a forward pass differs tenfold between the CPUs the project
runs on (an AVX2 EPYC in float32, a Xeon with AMX in bf16). So this script times a forward pass of
the model in the precision the run will use (``optim.mixed_precision=auto``'s choice,
:func:`preftune.training.precision.auto_mixed_precision`), predicts the run's time from it, and
holds out the largest multiple of 32 pairs, up to 384, that fits the budget. It says what it
measured and chose on stderr and prints the ``preftune train`` overrides on stdout::

    preftune train examples/demo.yaml $(python examples/demo_size.py)

Loading the model here also converts the embedded checkpoint on a fresh cache (once); that time
counts against the budget like the rest.
"""

from __future__ import annotations

import argparse
import sys
import time

BUDGET_S = 510.0  # 8.5 of the demo's 10 minutes: the rest is the margin for a prediction 15% short
FIXED_S = 30.0  # the run's own start-up, model load, greedy samples before and after, outputs
TRAIN_PAIRS = 160  # examples/demo.yaml's train_size: fixed, since more pairs did not raise the accuracy
MIN_HELD_OUT, MAX_HELD_OUT, STEP = 128, 384, 32
TOKENS_PER_PAIR = 105  # mean prompt + both responses at max_length 112 / max_prompt_length 48 (shared layout)
PARAMETERS = 134.5e6  # SmolLM2-135M, LM head included: the plain forward computes every position's logits
# Fitted on `make demo` runs with 2 threads (docs/benchmarks.md, `make demo`), per precision: seconds per token of
# the run's packed forward over the plain forward timed here (bf16 pays more outside the matmuls:
# casts, the float32 log-softmax), and a training pair's cost in forward passes (forward, backward
# through the last 10 layers, optimiser step; the backward gains less from bf16 than the forward).
RUN_OVER_PLAIN = {"bf16": 1.65, "no": 1.22}
TRAIN_COST = {"bf16": 2.9, "no": 1.95}


def seconds_per_pair(tokens_per_s: float, precision: str) -> float:
    """Expected seconds of one pair's forward pass in the run, from the plain forward speed measured here."""
    return TOKENS_PER_PAIR / tokens_per_s * RUN_OVER_PLAIN[precision]


def run_seconds(held_out: int, tokens_per_s: float, precision: str, train: int = TRAIN_PAIRS) -> float:
    """Expected run time: reference log-probs of every pair, training, the held-out pass after training
    (before training the policy is its own reference, so that pass is free), and the fixed costs."""
    forwards = (train + held_out) + TRAIN_COST[precision] * train + held_out
    return FIXED_S + forwards * seconds_per_pair(tokens_per_s, precision)


def choose_held_out(tokens_per_s: float, precision: str, seconds_left: float) -> int:
    """The most held-out pairs (a multiple of ``STEP`` within the bounds) expected to finish in ``seconds_left``;
    the minimum when even that is not: fewer could not show a gain at all."""
    fitting = [
        n
        for n in range(MIN_HELD_OUT, MAX_HELD_OUT + 1, STEP)
        if run_seconds(n, tokens_per_s, precision) <= seconds_left
    ]
    return fitting[-1] if fitting else MIN_HELD_OUT


def measure_tokens_per_s(precision: str, batch: int = 4, length: int = 96) -> float:
    """Tokens per second of a forward pass of the embedded model on ``[batch, length]`` tokens under the
    run's autocast (``precision``: ``bf16`` or ``no``), the mean of two passes after a warm-up one."""
    import torch

    from preftune.modeling import load_model

    model = load_model("smollm2-135m-instruct", dtype="float32")
    ids = torch.randint(3, model.config.vocab_size, (batch, length), generator=torch.Generator().manual_seed(0))
    seconds = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        for _ in range(3):  # the first pass primes oneDNN's kernels for these shapes: not counted
            start = time.perf_counter()
            model(input_ids=ids)
            seconds.append(time.perf_counter() - start)
    return ids.numel() / (sum(seconds[1:]) / 2)


def main(argv: list[str] | None = None) -> int:
    """Measure, choose, say so on stderr, print the overrides on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for the demo (%(default)s)")
    parser.add_argument("--precision", choices=("auto", "bf16", "no"), default="auto", help="as optim.mixed_precision")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    from preftune.modeling.precision import auto_mixed_precision

    precision = auto_mixed_precision() if args.precision == "auto" else args.precision
    rate = measure_tokens_per_s(precision)
    spent = time.perf_counter() - began  # the calibration and, on a fresh cache, the model's conversion
    held_out = choose_held_out(rate, precision, args.budget - spent)
    expected = spent + run_seconds(held_out, rate, precision)
    short = ""
    if held_out < MAX_HELD_OUT:
        full = (spent + run_seconds(MAX_HELD_OUT, rate, precision)) / 60
        short = f" (not all {MAX_HELD_OUT}: the gain may stay under 2 s.e.; all of them take about {full:.0f} min here)"
    print(
        f"measured {rate:,.0f} tokens/s in a {'bf16' if precision == 'bf16' else 'float32'} forward pass "
        f"({2 * PARAMETERS * rate / 1e9:,.0f} GFLOP/s; {spent:.0f} s so far): training on {TRAIN_PAIRS} pairs, "
        f"holding out {held_out}{short}; about {expected / 60:.1f} min in all",
        file=sys.stderr,
    )
    print(f"optim.mixed_precision={precision} data.train_size={TRAIN_PAIRS} data.eval_size={held_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
