"""Test helpers: records built from explicit per-token log-probs."""

from __future__ import annotations

import torch

from preftune.objectives import PairRecord, SequenceLogProbs


def seq(*rows: list[float], dtype: torch.dtype = torch.float64) -> SequenceLogProbs:
    """A record from ragged rows of per-token log-probs (one row per example)."""
    width = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=dtype)
    mask = torch.zeros(len(rows), width, dtype=torch.bool)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r, dtype=dtype)
        mask[i, : len(r)] = True
    return SequenceLogProbs.from_tokens(tokens, mask)


def random_pairs(batch: int = 6, width: int = 12, seed: int = 0, low: float = -6.0) -> PairRecord:
    """Random pairs with ragged lengths, per-token log-probs in (low, 0), policy and reference."""
    g = torch.Generator().manual_seed(seed)

    def one() -> SequenceLogProbs:
        lengths = torch.randint(1, width + 1, (batch,), generator=g)
        mask = torch.arange(width)[None, :] < lengths[:, None]
        tokens = torch.rand(batch, width, generator=g, dtype=torch.float64) * low
        return SequenceLogProbs.from_tokens(tokens, mask)

    chosen, rejected = one(), one()
    ref = lambda s: SequenceLogProbs.from_tokens(  # noqa: E731
        (s.tokens + 0.5 * torch.randn(s.tokens.shape, generator=g, dtype=torch.float64)).clamp(max=-1e-3), s.mask
    )
    return PairRecord(chosen, rejected, ref(chosen), ref(rejected))


def concurrently(work, threads: int) -> list[BaseException]:
    """Run ``work(i)`` in ``threads`` threads at once; return what any of them raised."""
    import threading

    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as error:  # pragma: no cover - reported by the caller
            errors.append(error)

    started = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return errors
