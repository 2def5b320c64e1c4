"""Which pairs each optimiser step reads: a deterministic plan, so runs resume exactly.

Epoch e visits the pairs in the order of a permutation seeded by (seed, e) (with ``lengths``,
one grouped by length: :func:`preftune.data.length_grouped_batches`); step k of the epoch
takes the k-th block of ``batch_size`` pairs (a last incomplete block is dropped, so
every step has the same size and two processes split it evenly). A process of rank r out of
W takes the r-th contiguous share of the block, and splits it into ``grad_accumulation``
micro-batches. The data position is therefore just the global step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from preftune.data.sampling import length_grouped_batches
from preftune.errors import SpecError


@dataclass(frozen=True)
class BatchPlan:
    num_examples: int
    batch_size: int
    seed: int = 0
    world_size: int = 1
    grad_accumulation: int = 1
    lengths: tuple[int, ...] | None = None  # each pair's length, to group batches by length
    # Every step asks for its epoch's order; it is computed once per epoch (the latest one kept).
    _orders: dict[int, torch.Tensor] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.lengths is not None and len(self.lengths) != self.num_examples:
            raise SpecError(f"{len(self.lengths)} lengths for {self.num_examples} pairs")
        if self.num_examples < self.batch_size:
            raise SpecError(
                f"only {self.num_examples} training pairs, fewer than one batch of {self.batch_size}: "
                "lower optim.batch_size or add data"
            )
        if self.batch_size % (self.world_size * self.grad_accumulation):
            raise SpecError(
                f"optim.batch_size {self.batch_size} must be divisible by processes ({self.world_size}) "
                f"× grad_accumulation ({self.grad_accumulation})"
            )

    @property
    def steps_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def total_steps(self, epochs: float, max_steps: int | None) -> int:
        return max_steps if max_steps is not None else max(1, math.ceil(epochs * self.steps_per_epoch))

    def order(self, epoch: int) -> torch.Tensor:
        if epoch not in self._orders:
            self._orders.clear()
            self._orders[epoch] = self._new_order(epoch)
        return self._orders[epoch]

    def _new_order(self, epoch: int) -> torch.Tensor:
        seed = self.seed * 100_003 + epoch
        if self.lengths is not None:
            # Only the last of these batches can be short, so the first steps_per_epoch are full.
            batches = length_grouped_batches(self.lengths, self.batch_size, seed=seed, drop_last=True)
            return torch.tensor([i for batch in batches for i in batch], dtype=torch.long)
        return torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(seed))

    def step_indices(self, step: int) -> torch.Tensor:
        """``[batch_size]`` dataset indices read by global step ``step`` (all processes)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return self.order(epoch)[k * self.batch_size : (k + 1) * self.batch_size]

    def indices_read(self, total_steps: int, start: int = 0) -> list[int]:
        """The dataset indices that steps ``start .. total_steps - 1`` read, sorted, each once."""
        read: set[int] = set()
        for step in range(start, total_steps):
            read.update(self.step_indices(step).tolist())
            if len(read) == self.num_examples:
                break
        return sorted(read)

    def first_reads(self, total_steps: int, rank: int | None = None) -> list[list[int]]:
        """Index blocks holding every example that steps ``0 .. total_steps - 1`` read, each once: the
        first epoch's micro-batches of every process, exactly as the trainer batches them, then any
        example only a later epoch reads (one dropped from the first's last short batch) in blocks of
        a micro-batch's size. A reference precomputed in these blocks is computed as the policy's
        first pass is, so under bf16 autocast the two differ by the update alone, not by the
        rounding of another batch layout. ``rank``: only that process's share (its own first-epoch
        micro-batches and every ``world_size``-th later block), the processes' shares covering all."""
        first = min(total_steps, self.steps_per_epoch)
        ranks = range(self.world_size) if rank is None else [rank]
        blocks = [block.tolist() for step in range(first) for r in ranks for block in self.micro_batches(step, r)]
        seen = {i for step in range(first) for i in self.step_indices(step).tolist()}
        rest = [i for i in self.indices_read(total_steps) if i not in seen]
        size = max(1, self.batch_size // (self.world_size * self.grad_accumulation))
        later = [rest[k : k + size] for k in range(0, len(rest), size)]
        return blocks + (later if rank is None else later[rank :: self.world_size])

    def micro_batches(self, step: int, rank: int) -> list[torch.Tensor]:
        """This process's share of the step, split into ``grad_accumulation`` index blocks."""
        share = self.batch_size // self.world_size
        mine = self.step_indices(step)[rank * share : (rank + 1) * share]
        return list(mine.chunk(self.grad_accumulation))
