"""Judge calls per prompt for ranking N completions: IPR (binary insertion) against round robin (P4).

Each comparison asks the judge in both orders (two calls); ``preftune rank`` adds one comparison per
prompt to check that the best beats the worst. The judge here is longer-is-better on completions of
distinct random lengths (a consistent judge, so IPR's count is that of a real sort), 200 prompts per N:

    .venv/bin/python benchmarks/judge_calls.py
"""

from __future__ import annotations

import random
import statistics

from preftune.judging import BothOrders, FunctionJudge, longer_is_better
from preftune.judging.ranking import comparisons_bound, ipr_rank, round_robin_comparisons, round_robin_rank


def calls_per_prompt(n: int, method, prompts: int = 200, seed: int = 0) -> float:
    rng = random.Random(seed)
    counts = []
    for p in range(prompts):
        texts = [("w " * k).strip() for k in rng.sample(range(1, 10 * n), n)]
        both = BothOrders(FunctionJudge(longer_is_better))
        method(n, lambda i, j, texts=texts, p=p, both=both: both.compare(f"prompt {p}", texts[i], texts[j]))
        counts.append(both.calls)
    return statistics.mean(counts)


if __name__ == "__main__":
    print("| N | IPR calls/prompt (mean) | IPR bound (2 x comparisons) | round robin calls/prompt |")
    print("|---|---|---|---|")
    for n in (4, 8, 16):
        ipr, rr = calls_per_prompt(n, ipr_rank), calls_per_prompt(n, round_robin_rank)
        print(f"| {n} | {ipr:.1f} | {2 * comparisons_bound(n)} | {rr:.0f} (= 2 x {round_robin_comparisons(n)}) |")
