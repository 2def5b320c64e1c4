"""One on-policy round's sampling on a CPU, per sampler: seconds per round and tokens/s, interleaved.

    PYTHONPATH=src .venv/bin/python benchmarks/samplers.py --repeats 3

The workload of an on-policy round: SmolLM2-135M-Instruct (the float32 policy a run trains), 8
chat-templated prompts of 120-190 tokens, n = 2 samples each (16 rows), 64 new tokens per row with
end-of-turn suppressed (``min_new_tokens`` on the HF side, ``ignore_eos`` on llama.cpp's), so every
candidate decodes the same 1024 tokens. Candidates:

* ``copy-bf16``: :class:`~preftune.generation.copy_sampler.CopySampler` (bfloat16 copy, dynamic KV
  cache, shared prompt prefill): today's default on a CPU with native bf16;
* ``copy-bf16-unpacked``: the same copy with plain ``nn.Linear`` layers instead of weights packed for
  oneDNN (:mod:`preftune.generation.packed_linear`), the default before issue 22's packing;
* ``copy-bf16-dynamic``: the same with transformers' ``DynamicCache`` (``torch.cat`` each step) instead of
  the cache written in place (:mod:`preftune.generation.kv_cache`), the default before issue 22's change;
* ``copy-bf16-static``: the unpacked copy through ``generate`` with ``cache_implementation="static"``;
* ``copy-bf16-static-compile``: and ``torch.compile`` of the forward (transformers' auto-compile,
  allowed on a CPU by ``CompileConfig(_compile_all_devices=True)``); its first call, which compiles,
  is reported apart;
* ``plain-fp32``: the float32 policy itself through one plain ``generate`` call, every row prefilled: the
  baseline the generation target is read against (≥ 3× its tokens/s);
* ``llamacpp-<dtype>``: :class:`~preftune.generation.llamacpp_sampler.LlamaCppSampler`, the policy
  written as a GGUF file each round; split into write, load and sampling (the rest).

Each repeat runs every candidate once, in order, so a change of the machine's load hits all of
them alike; the table gives the median over repeats. The 2-round amortised column adds a
candidate's one-off cost (compilation) divided by two, as a 2-round on-policy benchmark pays it.

Measured (AMD EPYC Zen 4, AVX-512 BF16, 2 cores shared with other agents' processes, load 1-5;
median of 3 interleaved repeats; ``@1`` = one thread, otherwise torch's 2):

    sampler                       s/round   tok/s   (run 2, load 0.7 -> 2.9)
    copy-bf16                       47.68    21.5
    copy-bf16@1                     11.94    85.7
    copy-bf16-static@1              14.77    69.3
    llamacpp-bf16@1                 22.17    46.2   write 1.06 s, load 0.58 s
    llamacpp-bf16@2                 21.49    47.7   write 0.85 s, load 0.40 s

    run 1 (load 4-7): copy-bf16 85.7, copy-bf16@1 13.6, copy-bf16-static 77.9,
    copy-bf16-static-compile 95.2 (+ 246.8 s compiling: 171.0 a round over 2 rounds),
    llamacpp-bf16@1 19.7, llamacpp-bf16@2 20.5, llamacpp-f32@1 25.7

At equal threads the bf16 copy is the fastest; llama.cpp takes 1.5-1.9 times as long, a static
cache 1.2 times, and compiling costs minutes that 2 rounds do not pay back. Two torch threads on
these shared cores are 4-6 times slower than one.

With the copy's weights packed for oneDNN (2026-12-06, same CPU, nothing else running, ``--repeats 3
--candidates copy-bf16,copy-bf16-unpacked,plain-fp32``): copy-bf16 5.14 s a round (199.1 tok/s),
copy-bf16-unpacked 6.42 s (159.5), plain-fp32 12.65 s (80.9): the copy at 2.46x the plain call's tok/s.
Compiled on the idle machine (``--repeats 2 --candidates copy-bf16-static-compile,copy-bf16,copy-bf16-static``):
the static cache compiled 12.02 s a round after a 21.7 s first call, uncompiled 8.79 s, the packed copy 5.26 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any

import torch

import preftune.generation.llamacpp_sampler as llamacpp
import preftune.generation.sampling as sampling
from preftune.generation import packed_linear
from preftune.generation.copy_sampler import CopySampler
from preftune.modeling import load_model, load_tokenizer

TOPICS = [
    "the water cycle",
    "how vaccines train the immune system",
    "the causes of the French Revolution",
    "why the sky is blue",
    "compound interest",
    "photosynthesis in desert plants",
    "the history of the printing press",
    "how a refrigerator works",
]
NOTES = (
    "Here are my notes so far. {topic} is something I keep coming back to, because every explanation I "
    "read seems to skip a step. My teacher said the key idea is simple, but the textbook spends three "
    "chapters on it and the examples use words I do not know yet. I would like a short explanation in plain "
    "language, then one concrete example, then a common mistake people make, and finally a question I could "
    "ask myself to check that I really understood it. "
)


def round_prompts(tokenizer: Any, count: int = 8) -> list[list[int]]:
    """``count`` chat-templated prompts (generation prompt included) of about 120-190 tokens."""
    prompts = []
    for i, topic in enumerate(TOPICS[:count]):
        text = NOTES.format(topic=topic.capitalize()) + "Please keep it friendly. " * (i * 2)
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        prompts.append(list(encoded["input_ids"]))
    return prompts


def hf_kwargs(static: bool, compile_: bool) -> Callable[..., dict[str, Any]]:
    """``sampling._generate_kwargs`` with end-of-turn suppressed, and optionally a static cache (compiled)."""
    from transformers import CompileConfig

    ours = sampling._generate_kwargs

    def kwargs(config: Any, stop_ids: list[int], pad_id: int, device: Any) -> dict[str, Any]:
        out = ours(config, stop_ids, pad_id, device)
        out["min_new_tokens"] = config.max_new_tokens
        if static:
            out["cache_implementation"] = "static"
            out["disable_compile"] = not compile_
            if compile_:
                out["compile_config"] = CompileConfig(fullgraph=False, dynamic=False, mode="default")
                out["compile_config"]._compile_all_devices = True
        return out

    return kwargs


def run_hf(
    sampler: Callable[..., Any], static: bool, compile_: bool, share: bool = True, in_place: bool = True
) -> Callable[..., dict[str, float]]:
    """``sampler`` timed on a round, through ``generate`` (``share``: each prompt prefilled once for its rows;
    ``in_place``: the KV cache written in place, else transformers' ``DynamicCache``)."""

    def run(policy: Any, tokenizer: Any, prompts: list[list[int]], config: Any) -> dict[str, float]:
        original, shared, preallocate = sampling._generate_kwargs, sampling.SHARE_PREFILL, sampling.PREALLOCATE_CACHE
        sampling._generate_kwargs = hf_kwargs(static, compile_)
        sampling.SHARE_PREFILL = share and not static  # a static cache is built by generate, not handed in
        sampling.PREALLOCATE_CACHE = in_place and not static
        try:
            start = time.perf_counter()
            out = sampler(policy, tokenizer, prompts, config)
            total = time.perf_counter() - start
        finally:
            sampling._generate_kwargs, sampling.SHARE_PREFILL = original, shared
            sampling.PREALLOCATE_CACHE = preallocate
        return {"total": total, "tokens": sum(len(s.response_ids) for s in out)}

    return run


def run_llamacpp(sampler: llamacpp.LlamaCppSampler) -> Callable[..., dict[str, float]]:
    def run(policy: Any, tokenizer: Any, prompts: list[list[int]], config: Any) -> dict[str, float]:
        times: dict[str, float] = {}
        write, start_server, body = sampler.write, sampler.start, llamacpp.request_body

        def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                begin = time.perf_counter()
                try:
                    return function(*args, **kwargs)
                finally:
                    times[name] = time.perf_counter() - begin

            return call

        sampler.write, sampler.start = timed("write", write), timed("load", start_server)
        llamacpp.request_body = lambda *a: {**body(*a), "ignore_eos": True}
        try:
            begin = time.perf_counter()
            out = sampler(policy, tokenizer, prompts, config)
            total = time.perf_counter() - begin
        finally:
            del sampler.write, sampler.start
            llamacpp.request_body = body
        return {"total": total, **times, "tokens": sum(len(s.response_ids) for s in out)}

    return run


def with_threads(run: Callable[..., dict[str, float]], threads: int) -> Callable[..., dict[str, float]]:
    """``run`` with ``torch.set_num_threads(threads)`` for its duration."""

    def call(*args: Any) -> dict[str, float]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run(*args)
        finally:
            torch.set_num_threads(before)

    return call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", default="copy-bf16,copy-bf16-static,copy-bf16-static-compile,llamacpp-bf16")
    parser.add_argument("--llamacpp-threads", type=int, default=None, help="default: the free cores")
    # a candidate named NAME@T runs NAME with T threads (torch's for the copies, llama.cpp's)
    args = parser.parse_args()
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    policy = load_model("smollm2-135m-instruct", dtype="float32")
    prompts = round_prompts(tokenizer)
    config = sampling.SamplingConfig(n=2, max_new_tokens=64, batch_size=16, seed=0)
    copy = CopySampler(torch.bfloat16)
    unpacked = CopySampler(torch.bfloat16)
    packed_linear.PACK_LINEARS = False
    unpacked.refresh(policy)  # built now, with plain linear layers
    packed_linear.PACK_LINEARS = True
    candidates: dict[str, Callable[..., dict[str, float]]] = {
        "copy-bf16": run_hf(copy, static=False, compile_=False),
        "copy-bf16-unpacked": run_hf(unpacked, static=False, compile_=False),
        "copy-bf16-dynamic": run_hf(copy, static=False, compile_=False, in_place=False),
        # inductor cannot lower the packed layers' mkldnn op (it packs weights itself): the compiled copy is unpacked
        "copy-bf16-static": run_hf(unpacked, static=True, compile_=False),
        "copy-bf16-static-compile": run_hf(unpacked, static=True, compile_=True),
        # the baseline of issue 22's generation target: the float32 policy through a plain generate call, every
        # row prefilled (no shared prompt pass), as TRL and the plain loop of compare_trl_online.py sample
        "plain-fp32": run_hf(sampling.sample, static=False, compile_=False, share=False, in_place=False),
    }
    for dtype in ("bf16", "f16", "f32"):
        candidates[f"llamacpp-{dtype}"] = run_llamacpp(llamacpp.LlamaCppSampler(dtype, args.llamacpp_threads))
    chosen = args.candidates.split(",")
    for name in chosen:  # "<candidate>@<threads>": the same with that many threads (torch's or llama.cpp's)
        base, _, threads = name.partition("@")
        if threads and base.startswith("llamacpp-"):
            candidates[name] = run_llamacpp(llamacpp.LlamaCppSampler(base.removeprefix("llamacpp-"), int(threads)))
        elif threads:
            candidates[name] = with_threads(candidates[base], int(threads))
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if "Model name" in line), "?")
    print(f"CPU {model_name}, {len(os.sched_getaffinity(0))} cores, torch threads {torch.get_num_threads()}")
    print(f"prompt lengths {sorted(len(p) for p in prompts)}; load before: {os.getloadavg()}")
    once: dict[str, float] = {}
    if "copy-bf16-static-compile" in chosen:  # the compiling call, apart
        once["copy-bf16-static-compile"] = candidates["copy-bf16-static-compile"](policy, tokenizer, prompts, config)[
            "total"
        ]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in chosen}
    for repeat in range(args.repeats):
        for name in chosen:
            results[name].append(candidates[name](policy, tokenizer, prompts, config))
            print(f"repeat {repeat} {name}: {results[name][-1]}", flush=True)
    print(f"load after: {os.getloadavg()}")
    report(results, once)


def report(results: dict[str, list[dict[str, float]]], once: dict[str, float]) -> None:
    """The table: median seconds per round, tokens/s, the parts, and the 2-round amortised cost."""
    base = statistics.median(r["total"] for r in results.get("copy-bf16", next(iter(results.values()))))
    print(f"\n{'sampler':28} {'s/round':>8} {'tok/s':>7} {'vs copy':>8} {'write':>6} {'load':>6} {'2-round':>8}")
    for name, runs in results.items():
        total = statistics.median(r["total"] for r in runs)
        tokens = statistics.median(r["tokens"] for r in runs)
        parts = [statistics.median(r[k] for r in runs) if k in runs[0] else float("nan") for k in ("write", "load")]
        amortised = total + (once[name] - total) / 2 if name in once else total
        print(
            f"{name:28} {total:8.2f} {tokens / total:7.1f} {base / total:7.2f}x {parts[0]:6.2f} {parts[1]:6.2f}"
            f" {amortised:8.2f}"
        )
    for name, seconds in once.items():
        print(f"{name}: first (compiling) call {seconds:.1f} s")


if __name__ == "__main__":
    main()
