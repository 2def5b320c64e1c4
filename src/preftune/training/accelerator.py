"""The one place an :class:`~accelerate.Accelerator` is made (runs, the lab, benchmarks, tests).

accelerate keeps one process-wide state and refuses a second ``Accelerator`` with another
precision or device ("AcceleratorState has already been initialized"). A training run sets its
own, so the state left by earlier work in the same process (another run, a TRL trainer, a test) is
dropped first. accelerate has no public call for that: ``AcceleratorState._reset_state()`` is the
only private accelerate call in preftune, and it lives here. The distributed part (``PartialState``:
ranks, the process group) is kept, so a ``torchrun`` process stays joined.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState


def make_accelerator(
    mixed_precision: str = "no",
    *,
    cpu: bool | None = None,
    trackers: Sequence[str] = (),
    project_dir: str | Path | None = None,
) -> Accelerator:
    """A fresh accelerator.

    Args:
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (accelerate's names).
        cpu: force the CPU; None: the CPU when several processes run (``torchrun``) and no
            accelerator is present, since accelerate needs ``cpu=True`` to join them with gloo
            (without it each process would train alone), else the default device.
        trackers: accelerate's tracker names (``tensorboard``, ``wandb``...), empty for none.
        project_dir: where the trackers write.
    """
    if cpu is None:
        cpu = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available()
    forget_accelerator_state()
    # An FSDP launch: preftune shards the policy itself (training/sharding.py); accelerate, which would
    # wrap it again on a GPU (and ignores it on a CPU), is made as for DDP.
    fsdp = os.environ.pop("ACCELERATE_USE_FSDP", None)
    try:
        return Accelerator(
            cpu=cpu,
            mixed_precision=mixed_precision,
            log_with=list(trackers) or None,
            project_dir=None if project_dir is None else str(project_dir),
        )
    finally:
        if fsdp is not None:
            os.environ["ACCELERATE_USE_FSDP"] = fsdp


# What ``accelerate launch`` sets when its config asks for a sharded strategy, and that strategy's name.
SHARDED_LAUNCH = {
    "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
    "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM",
}


def sharded_launch_refusal(environ: Mapping[str, str] | None = None) -> str | None:
    """Why this run cannot train as ``accelerate launch`` asked, in one line, or None.

    preftune trains with DDP, or shards the policy itself with FSDP2 when the launch asks for FSDP
    (:mod:`preftune.training.sharding`). DeepSpeed and Megatron-LM partition the model and drive the
    optimiser step in their own engines, which preftune's loop, checkpoints and sampling copy do not
    go through; rather than train other than the user launched, the run is refused before any model
    loads.
    """
    env = os.environ if environ is None else environ
    for variable, strategy in SHARDED_LAUNCH.items():
        if env.get(variable, "").lower() in ("true", "1", "yes"):
            return (
                f"accelerate launch asked for {strategy} ({variable}=true): preftune trains with DDP or FSDP, "
                "since its engine would take over the optimiser step; launch with an accelerate config of "
                "distributed_type FSDP or MULTI_CPU/MULTI_GPU, or torchrun"
            )
    return None


def forget_accelerator_state() -> None:
    """Drop accelerate's process-wide precision and device state (the distributed part kept), so
    that the next ``Accelerator`` made in this process, preftune's or another library's, sets its own."""
    AcceleratorState._reset_state()
