"""What keeping LoRA's update under bf16 costs: a bf16 training step as before issue 19 (peft's own
LoRA sum in bf16, the LM head under autocast) against the same step with the sum and the logits in
float32, and held-out scoring under bf16 autocast against float32 — interleaved in one process,
several repeats each.

    .venv/bin/python benchmarks/adapter_precision_cost.py --model smollm2-135m-instruct

Prints the median seconds of each and their ratio (compare ratios across CPUs, not seconds).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn


def plain_peft(model: nn.Module) -> None:
    """Undo :func:`keep_adapters_in_float32`: peft's own LoRA forward."""
    from peft.tuners.lora import Linear as LoraLinear

    for module in model.modules():
        if isinstance(module, LoraLinear):
            base = module.get_base_layer()
            base._forward_hooks.clear()
            base._preftune_widened = False


def head_under_autocast(on: bool) -> None:
    """``on``: the LM head as it ran before issue 19 (under the autocast in force, bf16 logits)."""
    from preftune.modeling import logprobs

    def bf16_head(head, transform, states, targets):
        logits = head(states).float()
        logits = transform(logits) if transform is not None else logits
        return logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)

    logprobs._chunk_logprobs = bf16_head if on else FLOAT32_HEAD


def token_batch(pairs: int, length: int, vocab: int):
    """``2·pairs`` rows of random tokens, the second half of each row its response (no padding)."""
    from preftune.data.batch import TokenBatch

    ids = torch.randint(3, vocab, (2 * pairs, length), generator=torch.Generator().manual_seed(0))
    response = (torch.arange(length) >= length // 2)[None, :].expand(2 * pairs, length).clone()
    return TokenBatch(ids, torch.ones_like(ids), response, torch.arange(pairs), 2)


FLOAT32_HEAD = None  # preftune's own _chunk_logprobs, set in main


def main() -> None:
    global FLOAT32_HEAD
    from preftune.modeling import apply_lora, load_model, logprobs, response_logprobs
    from preftune.modeling.adapter_precision import keep_adapters_in_float32

    FLOAT32_HEAD = logprobs._chunk_logprobs
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = apply_lora(load_model(args.model, dtype="float32"), rank=8, alpha=16)
    batch = token_batch(args.pairs, args.length, model.config.vocab_size)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = -response_logprobs(model, batch, with_tokens=False).sum.mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    def score(bf16: bool) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                response_logprobs(model, batch, with_tokens=False)

        return run

    def as_before(before: bool, work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            (plain_peft if before else keep_adapters_in_float32)(model)
            head_under_autocast(before)
            work()

        return run

    cases = {
        "bf16 step, peft's LoRA, bf16 logits": as_before(True, step),
        "bf16 step, float32 sum and logits": as_before(False, step),
        "held-out scoring under bf16 autocast": as_before(True, score(True)),
        "held-out scoring in float32": as_before(False, score(False)),
    }
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for run in cases.values():  # warm-up
        run()
    for _ in range(args.repeats):
        for name, run in cases.items():
            began = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - began)
    median = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in median.items():
        print(f"{name:<40} {value:7.3f} s (median of {args.repeats})")
    names = list(median)
    print(f"training step: float32 sum and logits / before = {median[names[1]] / median[names[0]]:.3f}")
    print(f"held-out scoring: float32 / bf16 autocast = {median[names[3]] / median[names[2]]:.3f}")


if __name__ == "__main__":
    main()
