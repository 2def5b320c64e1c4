"""Which launches preftune trains as asked: DDP (torchrun, accelerate's MULTI_CPU/MULTI_GPU) yes;
a sharded strategy that ``accelerate launch`` announces in the environment, refused in one line.
(The real ``accelerate launch`` with an FSDP config: tests/training/test_distributed.py.)"""

from __future__ import annotations

import pytest

from preftune.training.accelerator import SHARDED_LAUNCH, sharded_launch_refusal


@pytest.mark.parametrize("variable", sorted(SHARDED_LAUNCH))
def test_each_sharded_strategy_is_refused_by_name(variable: str) -> None:
    reason = sharded_launch_refusal({variable: "true", "WORLD_SIZE": "2"})
    assert reason is not None and f"asked for {SHARDED_LAUNCH[variable]} ({variable}=true)" in reason
    assert "\n" not in reason


@pytest.mark.parametrize("value", ["false", "", "0"])
def test_ddp_launches_pass(value: str) -> None:
    assert sharded_launch_refusal({"ACCELERATE_USE_FSDP": value, "WORLD_SIZE": "2"}) is None
    assert sharded_launch_refusal({}) is None
