"""Reference policies π_ref: where the reference log-probs of a batch come from.

Every strategy maps a :class:`Batch` of B examples with C responses each to a record with
``sum [B, C]`` and ``count [B, C]`` (``records(batch)``; no gradient), on the batch's device, and
the model-backed ones, asked ``records(batch, with_tokens=True)``, per-token log-probs ``[B, C, T]``
too (LD-DPO's ``ld_alpha`` weighs the reference's tokens); calling it gives the pair view
``(chosen [B], rejected [B] | None)``:

- :class:`AdapterDisabledReference`: the policy itself with its LoRA adapters switched off; no
  second copy of the weights (the usual choice with LoRA).
- :class:`FrozenCopyReference`: a frozen deep copy of the model taken at construction (full
  fine-tuning); :class:`ModelReference` uses a separately loaded model as is (e.g. a checkpoint
  from an earlier stage, as in P1's two-stage DPO-after-ExMATE recipe).
- :class:`PrecomputedReference`: computed once before training by one of the above, for a
  dataset (cached on disk, keyed by the model's and the data's fingerprints and the autocast
  precision, :mod:`preftune.modeling.fingerprint`) or for the samples of one round (in memory);
  rows are looked up by ``batch.example_ids``.

Model-backed references run in eval mode (no dropout) under ``torch.no_grad()``.
"""

from __future__ import annotations

import copy
import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from preftune.data.batch import Batch
from preftune.errors import PreftuneError
from preftune.modeling.cache import atomic_write_target, cache_root
from preftune.modeling.fingerprint import batches_fingerprint, is_adapter_parameter, model_fingerprint
from preftune.modeling.logprobs import as_pair, response_logprobs
from preftune.objectives.records import SequenceLogProbs

Pair = tuple[SequenceLogProbs, SequenceLogProbs | None]
CACHE_FORMAT = "preftune-reference-v3"  # v3: under autocast, the LM head in float32 and the batches in the key


class ReferenceLogProbs(ABC):
    """Reference log-probs for token batches: ``reference.records(batch) -> [B, C]`` record;
    ``reference(batch) -> (chosen, rejected | None)`` for pairs."""

    @abstractmethod
    def records(self, batch: Batch, with_tokens: bool = False) -> SequenceLogProbs:
        """``sum``/``count`` ``[B, C]`` for the C responses of each of the B examples of ``batch``;
        with ``with_tokens``, ``tokens``/``mask`` ``[B, C, T]`` too (T the batch's longest response)."""

    def __call__(self, batch: Batch) -> Pair:
        """The pair view of :meth:`records`: ``(chosen [B], rejected [B])``, ``rejected`` None for C = 1."""
        return as_pair(self.records(batch))

    def fingerprint(self) -> str:
        """A digest of what computes these values (for :class:`PrecomputedReference`'s cache key)."""
        raise PreftuneError(f"{type(self).__name__} has no fingerprint, so it cannot key a reference cache")


class ModelReference(ReferenceLogProbs):
    """A given model as π_ref, used as it is (in eval mode for each call, its modes restored after)."""

    def __init__(self, model: nn.Module, *, chunk_size: int = 1024) -> None:
        self.model = model
        self.chunk_size = chunk_size

    def records(self, batch: Batch, with_tokens: bool = False) -> SequenceLogProbs:
        with _eval_mode(self.model):
            return _compute(self.model, batch, self.chunk_size, with_tokens)

    def fingerprint(self) -> str:
        return model_fingerprint(self.model)


class FrozenCopyReference(ModelReference):
    """A frozen deep copy of ``model`` taken now: π_ref for full fine-tuning (twice the weights' memory).

    Frozen between refreshes: :meth:`refresh` moves it towards the policy (TR-DPO), and
    :meth:`state_dict` holds what a refresh may have changed, for checkpoints.
    """

    def __init__(self, model: nn.Module, *, chunk_size: int = 1024) -> None:
        super().__init__(copy.deepcopy(model).eval().requires_grad_(False), chunk_size=chunk_size)
        # The policy's trainable parameters at the copy: the only ones a refresh moves (the others stay equal).
        self.trainable = {name for name, p in model.named_parameters() if p.requires_grad}

    def refresh(self, policy: nn.Module, alpha: float) -> None:
        """θ_ref ← α·θ + (1 - α)·θ_ref for each trainable parameter θ of ``policy`` (the model copied);
        α = 1 copies θ (TR-DPO's hard update; Gorbatovski et al. 2024, eq. 5 and 6). TRL's
        ``SyncRefModelCallback`` does the same, over every parameter: the frozen ones are equal anyway."""
        mine = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if name not in self.trainable:
                    continue
                if alpha == 1.0:
                    mine[name].copy_(param)
                else:
                    mine[name].mul_(1.0 - alpha).add_(param.to(mine[name].dtype), alpha=alpha)

    def state_dict(self) -> dict[str, Tensor]:
        """The parameters a refresh moves, on the CPU (a checkpoint's ``reference.safetensors``)."""
        return {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if n in self.trainable}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Take back :meth:`state_dict`'s values; a set of names other than this copy's is refused."""
        mine = {n: p for n, p in self.model.named_parameters() if n in self.trainable}
        if set(state) != set(mine):
            raise PreftuneError("the saved reference's parameters are not this run's: was the model or LoRA changed?")
        with torch.no_grad():
            for name, value in state.items():
                mine[name].copy_(value)


class AdapterDisabledReference(ReferenceLogProbs):
    """The LoRA policy with its adapters disabled (``with model.disable_adapter():``): the base model,
    without a second copy. The policy's train/eval modes are restored after each call."""

    def __init__(self, model: nn.Module, *, chunk_size: int = 1024) -> None:
        if not hasattr(model, "disable_adapter"):
            raise PreftuneError(
                "AdapterDisabledReference needs a peft model (apply_lora); use FrozenCopyReference for full fine-tuning"
            )
        self.model = model
        self.chunk_size = chunk_size

    def records(self, batch: Batch, with_tokens: bool = False) -> SequenceLogProbs:
        with _eval_mode(self.model), self.model.disable_adapter():
            return _compute(self.model, batch, self.chunk_size, with_tokens)

    def fingerprint(self) -> str:
        return model_fingerprint(self.model, skip=is_adapter_parameter)


class PrecomputedReference(ReferenceLogProbs):
    """Reference sums and counts of a set of examples, held in memory (and cached on disk by :meth:`build`).

    ``table``: ``example_ids [E]``, ``sum [E, C]``, ``count [E, C]``. A batch of the first C' ≤ C
    responses of these examples reads the first C' columns. Looking up a batch checks that each
    response's length matches the one computed, which catches a change of tokenisation that the
    cache key could not see (data given to :meth:`build` differs from the data trained on).
    """

    def __init__(self, table: dict[str, Tensor], *, path: Path | None = None, hit: bool = False) -> None:
        order = torch.argsort(table["example_ids"])
        self.table = {name: values[order] for name, values in table.items()}
        self.group_size = int(self.table["sum"].shape[1])
        self.path = path
        self.hit = hit

    @classmethod
    def compute(cls, source: ReferenceLogProbs | nn.Module, batches: Iterable[Batch]) -> PrecomputedReference:
        """Compute the reference over ``batches`` (every example once) with ``source``, in memory only
        (the samples of one on-policy round: nothing to find again)."""
        if isinstance(source, nn.Module):
            source = ModelReference(source)
        return cls(compute_table(source, _checked(batches)))

    @classmethod
    def build(
        cls,
        source: ReferenceLogProbs | nn.Module,
        batches: Iterable[Batch],
        *,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> PrecomputedReference:
        """Compute the reference over ``batches`` (every example once) with ``source``, or load it.

        Args:
            source: a model-backed reference, or a model (used as a :class:`ModelReference`).
            batches: the whole dataset, tokenised as for training; read twice, so a list (an
                iterator is materialised).
            cache_dir: where the cache files live (default ``<cache root>/reference``).
        """
        if isinstance(source, nn.Module):
            source = ModelReference(source)
        batches = _checked(batches)
        path = cache_path(source, batches, cache_dir)
        if path.is_file():
            return cls.load(path)
        table = compute_table(source, batches)
        save_table(table, path)
        return cls(table, path=path, hit=False)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrecomputedReference:
        """Load a cache file written by :meth:`build`."""
        from safetensors.torch import load_file

        return cls(load_file(str(path)), path=Path(path), hit=True)

    def records(self, batch: Batch, with_tokens: bool = False) -> SequenceLogProbs:
        if with_tokens:
            raise PreftuneError("a precomputed reference holds sums, not per-token log-probs: use a live reference")
        c = batch.group_size
        if c > self.group_size:
            raise PreftuneError(f"the precomputed reference holds {self.group_size} responses per example, not {c}")
        known = self.table["example_ids"]
        wanted = batch.example_ids.cpu()
        slots = torch.searchsorted(known, wanted).clamp(max=known.numel() - 1)
        missing = wanted[known[slots] != wanted]
        if missing.numel():
            raise PreftuneError(f"examples {missing.tolist()[:10]} are not in the precomputed reference")
        counts = batch.response_counts().cpu().view(c, -1).T  # [B, C]
        count = self.table["count"][slots, :c]
        if not torch.equal(count.to(counts.dtype), counts):
            raise PreftuneError(
                "the batch's response lengths differ from those in the precomputed reference: "
                "was it built from the same data and tokenisation?"
            )
        device = batch.input_ids.device
        return SequenceLogProbs(sum=self.table["sum"][slots, :c].to(device), count=count.to(device))


def _checked(batches: Iterable[Batch]) -> list[Batch]:
    batches = list(batches)
    if not batches:
        raise PreftuneError("cannot precompute a reference for an empty dataset")
    if len({b.group_size for b in batches}) > 1:
        raise PreftuneError("cannot precompute a reference for batches of different numbers of responses")
    return batches


def _autocast_state() -> str:
    """The autocast precision in force (bf16 and fp32 reference values differ by up to ~0.5 nats)."""
    states = []
    for device in ("cpu", "cuda"):
        if torch.is_autocast_enabled(device):
            states.append(f"{device}:{torch.get_autocast_dtype(device)}")
    return ",".join(states) or "none"


def cache_path(source: ReferenceLogProbs, batches: list[Batch], cache_dir: str | os.PathLike[str] | None) -> Path:
    """Where :meth:`PrecomputedReference.build` keeps the table of ``source`` over ``batches``."""
    autocast = _autocast_state()
    parts = [CACHE_FORMAT, source.fingerprint(), batches_fingerprint(batches), autocast]
    if autocast != "none":  # in low precision a batch's layout changes the rounding: the batches are part of the key
        parts.append(";".join(",".join(map(str, b.example_ids.tolist())) for b in batches))
    key = hashlib.sha256("|".join(parts).encode())
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "reference"
    return folder / f"{key.hexdigest()[:40]}.safetensors"


def _compute(model: nn.Module, batch: Batch, chunk_size: int, with_tokens: bool = False) -> SequenceLogProbs:
    """Reference ``[B, C]`` record for ``batch`` (per-token ``[B, C, T]`` with ``with_tokens``), computed on
    the model's device and returned on the batch's."""
    device = batch.input_ids.device
    model_device = next(model.parameters()).device
    with torch.no_grad():
        record = response_logprobs(model, batch.to(model_device), with_tokens=with_tokens, chunk_size=chunk_size)
    if with_tokens:
        assert record.tokens is not None and record.mask is not None
        return SequenceLogProbs.from_tokens(record.tokens.to(device), record.mask.to(device))
    return SequenceLogProbs(sum=record.sum.to(device), count=record.count.to(device))


def compute_table(source: ReferenceLogProbs, batches: list[Batch]) -> dict[str, Tensor]:
    """``example_ids [E]``, ``sum [E, C]``, ``count [E, C]``, on the CPU."""
    columns: dict[str, list[Tensor]] = {"example_ids": [], "sum": [], "count": []}
    for batch in batches:
        record = source.records(batch)
        columns["example_ids"].append(batch.example_ids.cpu().to(torch.int64))
        columns["sum"].append(record.sum.detach().cpu())
        columns["count"].append(record.count.detach().cpu())
    table = {name: torch.cat(parts) for name, parts in columns.items()}
    if table["example_ids"].unique().numel() != table["example_ids"].numel():
        raise PreftuneError("an example id appears twice in the data given to the precomputed reference")
    return table


def save_table(table: dict[str, Tensor], path: Path) -> None:
    """Write the table to ``path`` atomically (a temporary file beside it, then ``os.replace``)."""
    from safetensors.torch import save_file

    tmp = atomic_write_target(path)
    try:
        save_file({k: v.contiguous() for k, v in table.items()}, str(tmp), metadata={"format": CACHE_FORMAT})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every module in eval mode for the duration, then restore each one's own mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
