"""``sample()`` on a CPU with preftune's inverse-CDF token draw against the same call with ``generate``'s
own sampling (``torch.multinomial``), interleaved, several repeats each.

    .venv/bin/python benchmarks/token_draw.py --model smollm2-135m-instruct --dtype bfloat16

Prints each side's wall seconds per repeat and the tokens generated (the same seed on both sides, so
the responses differ only through the draw).
"""

from __future__ import annotations

import argparse
import time

import torch

import preftune.generation.sampling as sampling
from preftune.generation.prompts import encode_prompt
from preftune.modeling import load_model, load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer, model = load_tokenizer(args.model), load_model(args.model, dtype=args.dtype)
    prompts = [encode_prompt(tokenizer, f"Tell me about topic number {i}.") for i in range(args.prompts)]
    config = sampling.SamplingConfig(
        n=args.n, max_new_tokens=args.max_new_tokens, batch_size=args.prompts * args.n, seed=0
    )
    ours = sampling._generate_kwargs

    def multinomial(config, stop_ids, pad_id, device):  # generate's own sampling: the non-CPU branch
        return ours(config, stop_ids, pad_id, torch.device("meta"))

    seconds: dict[str, list[float]] = {"inverse-CDF draw": [], "torch.multinomial": []}
    tokens: dict[str, int] = {}
    for _ in range(args.repeats):
        for side, kwargs in (("torch.multinomial", multinomial), ("inverse-CDF draw", ours)):
            sampling._generate_kwargs = kwargs
            start = time.perf_counter()
            out = sampling.sample(model, tokenizer, prompts, config)
            seconds[side].append(time.perf_counter() - start)
            tokens[side] = sum(len(s.response_ids) for s in out)
    sampling._generate_kwargs = ours
    for side, values in seconds.items():
        print(f"{args.model} {args.dtype} {side}: {', '.join(f'{v:.2f}' for v in values)} s; {tokens[side]} tokens")


if __name__ == "__main__":
    main()
