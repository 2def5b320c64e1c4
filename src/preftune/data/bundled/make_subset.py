"""Make the bundled HH-RLHF subset, reproducibly.

    python src/preftune/data/bundled/make_subset.py [--source PATH] [--size 1200] [--seed 0]

Reads Anthropic HH-RLHF harmless-base ``test.jsonl.gz`` (MIT licence), keeps the rows that parse
into a valid pair (see ``preftune.data.dialogues``) whose final responses differ and are short
(each at most 64 whitespace-separated words, the prompt at most 200 words over all its turns),
draws ``size`` of them with a seeded generator, and writes those rows unchanged, in source
order, to ``hh-rlhf-harmless-base-subset.jsonl.gz`` beside this script (gzip with mtime 0, so
the same input gives the same bytes).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from pathlib import Path

from preftune.data.dialogues import parse_implicit
from preftune.data.examples import Origin, PreferenceExample
from preftune.data.validation import RowProblem, check_example

HERE = Path(__file__).resolve().parent
SOURCE = Path("/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz")
OUTPUT = HERE / "hh-rlhf-harmless-base-subset.jsonl.gz"
MAX_RESPONSE_WORDS = 64
MAX_PROMPT_WORDS = 200


def words(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"].split()) for m in messages)


def eligible(line: str) -> bool:
    """True for a row that is a valid pair with short, differing final responses."""
    row = json.loads(line)
    try:
        prompt, chosen, rejected = parse_implicit(row["chosen"], row["rejected"])
        check_example(PreferenceExample(prompt, chosen, rejected, Origin("hh", 0)))
    except RowProblem:
        return False
    return (
        words(chosen) <= MAX_RESPONSE_WORDS
        and words(rejected) <= MAX_RESPONSE_WORDS
        and words(prompt) <= MAX_PROMPT_WORDS
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=SOURCE)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--size", type=int, default=1200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with gzip.open(args.source, "rt", encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle if line.strip()]
    candidates = [i for i, line in enumerate(lines) if eligible(line)]
    chosen = sorted(random.Random(args.seed).sample(candidates, min(args.size, len(candidates))))
    with args.output.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
        out.write("".join(lines[i] + "\n" for i in chosen).encode("utf-8"))
    print(f"{len(lines)} rows, {len(candidates)} eligible, {len(chosen)} written to {args.output}")


if __name__ == "__main__":
    main()
