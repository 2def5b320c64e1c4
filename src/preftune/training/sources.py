"""Batch sources: where a trainer's micro-batches come from (P3's unified loop, docs/methods.md §4).

The trainer consumes a plain iterator: ``next(source)`` is this process's micro-batches of the
next optimiser step, and a source carries its own position (``state_dict``/``load_state_dict``,
saved in every checkpoint), so a resumed run reads exactly what an uninterrupted one would.

- :class:`DatasetSource`: offline training over a dataset (pairs or ranked groups) through the
  deterministic :class:`~preftune.training.plan.BatchPlan`; its position is its step. The data
  themselves are checked on ``--resume`` by their fingerprints (:mod:`preftune.run.resume`).
- :class:`BufferSource`: T passes over the samples of one round (on-policy sampling, or any
  labelled buffer); its state holds the samples too, since a round's samples cannot be read again.

Offline training is one round of the same loop over a :class:`DatasetSource`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

from preftune.data import Batch, Batcher, Origin
from preftune.data.collate import Responses
from preftune.data.groups import TokenizedGroup
from preftune.errors import PreftuneError
from preftune.training.plan import BatchPlan


class BatchSource(Protocol):
    """What :meth:`preftune.training.loop.Trainer.fit` reads: an iterator of a step's micro-batches."""

    def __next__(self) -> list[Batch]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class PlannedSource:
    """The steps of a :class:`BatchPlan` over ``items``, laid out by ``batcher``.

    Args:
        items: tokenized pairs or groups.
        batcher: the run's layout.
        plan: which items each step reads (and this process's share, split for accumulation).
        total_steps: steps before the source is exhausted (``StopIteration``); None: never (the plan's
            epochs follow one another, and the trainer's ``total_steps`` ends the fit).
        rank: this process's rank.
        group_size: responses taken of each item (1: chosen only; None: all).
        device: where the batches go.
        mismatched: each batch also carries its mismatched pairs (``kto``'s KL estimate).
    """

    kind = "planned"

    def __init__(
        self,
        items: Sequence[Responses],
        batcher: Batcher,
        plan: BatchPlan,
        total_steps: int | None = None,
        *,
        rank: int = 0,
        group_size: int | None = None,
        device: torch.device | str = "cpu",
        mismatched: bool = False,
    ) -> None:
        self.items, self.batcher, self.plan = list(items), batcher, plan
        self.total_steps, self.rank, self.group_size, self.device = total_steps, rank, group_size, device
        self.mismatched = mismatched
        self.step = 0

    def __iter__(self) -> PlannedSource:
        return self

    def __next__(self) -> list[Batch]:
        if self.total_steps is not None and self.step >= self.total_steps:
            raise StopIteration
        micro = self.plan.micro_batches(self.step, self.rank)
        self.step += 1
        return [self.batch(indices) for indices in micro]

    def batch(self, indices: torch.Tensor) -> Batch:
        items = [self.items[i] for i in indices.tolist()]
        return self.batcher(items, indices, group_size=self.group_size, mismatched=self.mismatched).to(self.device)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind", self.kind) != self.kind:
            raise PreftuneError(f"the checkpoint's data position is of a {state['kind']} source, not a {self.kind} one")
        self.step = int(state["step"])


class DatasetSource(PlannedSource):
    """Offline training over a dataset: ``epochs`` (or ``max_steps``) of the plan's steps."""

    kind = "dataset"


class BufferSource(PlannedSource):
    """``passes`` passes (P3's T) over one round's labelled samples, in seeded order.

    ``batch_size`` groups per optimiser step over all processes; the order of pass t is seeded by
    (``seed``, ``round``, t). The state holds the samples, so a run killed mid-round resumes
    on the same samples at the same step.
    """

    kind = "buffer"

    def __init__(
        self,
        samples: Sequence[TokenizedGroup],
        batcher: Batcher,
        *,
        batch_size: int,
        passes: int = 1,
        seed: int = 0,
        round: int = 0,
        world_size: int = 1,
        rank: int = 0,
        grad_accumulation: int = 1,
        group_size: int | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if passes < 1:
            raise PreftuneError(f"a buffer needs at least one pass over its samples, not {passes}")
        self.settings = {
            "batch_size": batch_size,
            "passes": passes,
            "seed": seed,
            "round": round,
            "world_size": world_size,
            "grad_accumulation": grad_accumulation,
        }
        plan = self._plan(len(samples))
        super().__init__(
            samples, batcher, plan, plan.total_steps(passes, None), rank=rank, group_size=group_size, device=device
        )

    def _plan(self, num_samples: int) -> BatchPlan:
        k = self.settings
        return BatchPlan(
            num_samples, k["batch_size"], k["seed"] * 100_003 + k["round"], k["world_size"], k["grad_accumulation"]
        )

    @staticmethod
    def saved_samples(state: dict[str, Any]) -> tuple[int, list[TokenizedGroup]]:
        """The round and the samples of a buffer's saved state (``source.pt`` of a checkpoint)."""
        return int(state["settings"]["round"]), [_group_from_state(s) for s in state["samples"]]

    def state_dict(self) -> dict[str, Any]:
        samples = [_group_state(g) for g in self.items]  # type: ignore[arg-type]
        return {**super().state_dict(), "settings": self.settings, "samples": samples}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("settings") != self.settings:
            raise PreftuneError(
                f"the checkpoint's buffer was made with {state.get('settings')}, this run's with {self.settings}"
            )
        # The plan follows the checkpoint's samples: a resumed process cannot sample the round again,
        # so it may hold a buffer of another size.
        self.items = [_group_from_state(s) for s in state["samples"]]
        self.plan = self._plan(len(self.items))
        self.total_steps = self.plan.total_steps(self.settings["passes"], None)
        super().load_state_dict(state)


def _group_state(group: TokenizedGroup) -> dict[str, Any]:
    origin = group.origin
    return {
        "prompt_ids": group.prompt_ids,
        "responses": list(group.responses),
        "rewards": None if group.rewards is None else list(group.rewards),
        "finished": None if group.finished is None else list(group.finished),
        "origin": [origin.source, origin.row, origin.part],
    }


def _group_from_state(state: dict[str, Any]) -> TokenizedGroup:
    rewards, finished = state["rewards"], state["finished"]
    return TokenizedGroup(
        list(state["prompt_ids"]),
        tuple(list(r) for r in state["responses"]),
        None if rewards is None else tuple(float(r) for r in rewards),
        Origin(*state["origin"]),
        None if finished is None else tuple(bool(f) for f in finished),
    )
