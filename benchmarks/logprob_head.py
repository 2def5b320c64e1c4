"""Peak memory and time of response log-probs: chunked response-only head vs full logits.

A model (default: the embedded SmolLM2-135M-Instruct; ``--model tiny-random`` for the tiny Llama
whose work is nearly all LM head), float32 on the CPU, ``--pairs`` pairs (2 rows each) of
``--length`` tokens, each row ending in a response of 32..48 tokens; one forward + backward of
the summed response log-probs.
Variants, each run in a fresh process so that memory is measured alone:

- ``chunked``: ``sequence_logprobs`` (head on response positions only, chunks checkpointed);
- ``chunked-nockpt``: the same without checkpointing the head chunks;
- ``naive``: ``model(...).logits`` ``[rows, length, vocab]`` then log_softmax and gather (what a
  plain implementation does).

Memory is the process's peak resident set during the step above its resident set before it
(Linux: the peak is reset through ``/proc/self/clear_refs`` first), one fresh process per variant.
Time is measured in one process with the variants interleaved, wall and CPU seconds. Run:

    .venv/bin/python benchmarks/logprob_head.py [--model tiny-random] [--pairs 8] [--length 512] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from preftune.data.batch import TokenBatch
from preftune.modeling import load_model, sequence_logprobs

VARIANTS = ("chunked", "chunked-nockpt", "naive")


def make_batch(pairs: int = 8, length: int = 256, vocab: int = 49152, seed: int = 0) -> TokenBatch:
    g = torch.Generator().manual_seed(seed)
    rows = 2 * pairs
    ids = torch.randint(3, vocab, (rows, length), generator=g)
    responses = torch.randint(32, 49, (rows,), generator=g)
    position = torch.arange(length)[None, :]
    response = position >= (length - responses)[:, None]
    attention = torch.ones(rows, length, dtype=torch.long)
    return TokenBatch(ids, attention, response, torch.arange(pairs), 2)


def naive_sum(model, batch: TokenBatch) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    return (logps * batch.response_mask[:, 1:]).sum()


def step(model, batch: TokenBatch, variant: str, chunk_size: int) -> float:
    if variant == "naive":
        total = naive_sum(model, batch)
    else:
        chosen, rejected = sequence_logprobs(
            model, batch, with_tokens=False, chunk_size=chunk_size, checkpoint_head=variant == "chunked"
        )
        total = chosen.sum.sum() + rejected.sum.sum()
    total.backward()
    model.zero_grad(set_to_none=True)
    return float(total.detach())


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def measure_memory(variant: str, chunk_size: int, name: str, pairs: int, length: int) -> dict:
    """Peak extra resident memory of one step (after a warm-up step), in this fresh process."""
    model = load_model(name).train()
    batch = make_batch(pairs, length, model.config.vocab_size)
    value = step(model, batch, variant, chunk_size)  # warm-up: allocator, kernels, autograd threads
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM)
    before = _status_kb("VmRSS")
    step(model, batch, variant, chunk_size)
    return {"variant": variant, "value": value, "peak_extra_mb": round((_status_kb("VmHWM") - before) / 1024, 1)}


def measure_time(
    variants: list[str], rounds: int, chunk_size: int, name: str, pairs: int, length: int
) -> dict[str, dict[str, float]]:
    """Wall and CPU seconds per step, variants interleaved round by round so that other load on the
    machine affects them alike."""
    model = load_model(name).train()
    batch = make_batch(pairs, length, model.config.vocab_size)
    for variant in variants:
        step(model, batch, variant, chunk_size)  # warm-up
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for variant in variants:
            w, c = time.perf_counter(), time.process_time()
            step(model, batch, variant, chunk_size)
            wall[variant].append(time.perf_counter() - w)
            cpu[variant].append(time.process_time() - c)
    return {v: {"wall": statistics.median(wall[v]), "cpu": statistics.median(cpu[v])} for v in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed steps per variant (interleaved)")
    parser.add_argument("--chunk-size", type=int, default=1024)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="smollm2-135m-instruct or tiny-random")
    parser.add_argument("--pairs", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = (args.model, args.pairs, args.length)
    if args.memory_of:
        print(json.dumps(measure_memory(args.memory_of, args.chunk_size, *shape)))
        return
    vocab, rows, length = 49152, 2 * args.pairs, args.length
    batch = make_batch(args.pairs, length, vocab)
    print(
        f"{args.model} float32, {rows} rows x {length} tokens, {batch.num_response_tokens} response tokens; "
        f"full logits [{rows}, {length}, {vocab}] float32 = {rows * length * vocab * 4 / 2**20:.0f} MB"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, chunk_size {args.chunk_size}")
    memory = {}
    for variant in args.variants:
        command = [sys.executable, __file__, "--memory-of", variant, "--chunk-size", str(args.chunk_size)]
        command += ["--model", args.model, "--pairs", str(args.pairs), "--length", str(args.length)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        memory[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    times = measure_time(args.variants, args.rounds, args.chunk_size, *shape)
    for variant in args.variants:
        print(
            f"{variant:15s} peak +{memory[variant]['peak_extra_mb']:7.1f} MB   "
            f"{times[variant]['wall']:6.2f} s wall  {times[variant]['cpu']:6.2f} s CPU per fwd+bwd step "
            f"(median of {args.rounds})   sum of log-probs {memory[variant]['value']:.4f}"
        )


if __name__ == "__main__":
    main()
