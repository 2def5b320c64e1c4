"""Checkpoints written atomically, and found again for ``--resume``.

A checkpoint is a folder ``checkpoints/step-000042`` with the trainable weights only
(``trainable.safetensors``: the LoRA adapter, or every weight when fine-tuning fully), the
optimizer and scheduler states, every RNG state, the batch source's position (``source.pt``: a
dataset's step, or a round's buffer of samples and its step, see :mod:`preftune.training.sources`)
and ``trainer_state.json`` (the global step and the metric history).

Not ``accelerate.save_state``: it saves the whole model, 0.5 GB of frozen base weights per
checkpoint under LoRA. The folder is written under a temporary name and renamed into place,
so a run killed mid-write leaves the previous checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from preftune.files import write_json_atomic  # also imported from here by training modules
from preftune.training.sharding import load_whole

STATE_FILE = "trainer_state.json"
SOURCE_FILE = "source.pt"
REFERENCE_FILE = "reference.safetensors"  # a refreshed reference's moved parameters (TR-DPO)


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    return output_dir / "checkpoints" / f"step-{step:06d}"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    output_dir: Path,
    step: int,
    model: nn.Module,
    optimizer_state: dict[str, Any],
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
    source_state: dict[str, Any] | None = None,
    reference_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save everything needed to continue from ``step`` (main process only); keep the newest ``keep``.
    ``model``'s parameters must be whole (a sharded model's inside
    :func:`~preftune.training.sharding.whole_parameters`); ``optimizer_state``: the optimiser's
    ``state_dict()``, or a sharded one's gathered whole; ``source_state``: the batch source's
    position (and a buffer's samples), in ``source.pt``; ``reference_state``: a refreshed
    reference's parameters, in ``reference.safetensors``."""
    final = checkpoint_dir(output_dir, step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save(
        {"optimizer": optimizer_state, "scheduler": scheduler.state_dict(), "rng": rng_state()},
        tmp / "optimizer.pt",
    )
    if source_state is not None:
        torch.save(source_state, tmp / SOURCE_FILE)
    if reference_state is not None:
        save_file(reference_state, str(tmp / REFERENCE_FILE))
    write_json_atomic(tmp / STATE_FILE, state)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(final.parent.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint under ``output_dir``, or None."""
    complete = [p for p in (output_dir / "checkpoints").glob("step-*") if (p / STATE_FILE).exists()]
    return max(complete, default=None, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(
    path: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    load_optimizer: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Restore trainable weights (each process its shards, when sharded), optimizer, scheduler and
    RNG states; return the trainer state. ``load_optimizer``: how to load the saved optimiser state
    (the trainer's: by name or by position), else ``optimizer.load_state_dict``."""
    load_whole(model, load_file(str(path / "trainable.safetensors")))
    saved = torch.load(path / "optimizer.pt", weights_only=False)
    (load_optimizer or optimizer.load_state_dict)(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rng = saved["rng"]
    random.setstate(rng["python"])
    np.random.set_state(rng["numpy"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    if (path / SOURCE_FILE).is_file():
        state["source"] = torch.load(path / SOURCE_FILE, weights_only=True)
    return state
