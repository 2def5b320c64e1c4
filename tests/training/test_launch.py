"""Which launches preftune trains as asked: DDP (torchrun, accelerate's MULTI_CPU/MULTI_GPU) and FSDP
(the policy sharded with FSDP2 by preftune itself) yes; DeepSpeed and Megatron-LM, and the FSDP
settings and run parts it cannot honour, refused in one line before any model loads. (The real
``accelerate launch`` with an FSDP config: tests/training/test_distributed.py and test_online.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preftune.cli.config import load_config
from preftune.errors import PreftuneError, SpecError
from preftune.modeling import apply_lora, load_model
from preftune.modeling.merged import current_tensors
from preftune.run.checks import check
from preftune.training.accelerator import SHARDED_LAUNCH, sharded_launch_refusal
from preftune.training.sharding import (
    ShardingPlan,
    is_sharded,
    layer_classes,
    requested_sharding,
    sharding_refusal,
    whole_parameters,
)

FSDP = {"ACCELERATE_USE_FSDP": "true", "WORLD_SIZE": "2", "FSDP_VERSION": "2"}


@pytest.mark.parametrize("variable", sorted(SHARDED_LAUNCH))
def test_each_engine_strategy_is_refused_by_name(variable: str) -> None:
    reason = sharded_launch_refusal({variable: "true", "WORLD_SIZE": "2"})
    assert reason is not None and f"asked for {SHARDED_LAUNCH[variable]} ({variable}=true)" in reason
    assert "\n" not in reason


@pytest.mark.parametrize("value", ["false", "", "0"])
def test_ddp_launches_pass(value: str) -> None:
    assert sharded_launch_refusal({"ACCELERATE_USE_FSDP": value, "WORLD_SIZE": "2"}) is None
    assert sharded_launch_refusal({}) is None
    assert requested_sharding({"ACCELERATE_USE_FSDP": value, "WORLD_SIZE": "2"}) is None


def test_fsdp_launches_are_sharded_as_their_config_says() -> None:
    assert sharded_launch_refusal(FSDP) is None and sharding_refusal(FSDP) is None
    assert requested_sharding(FSDP) == ShardingPlan((), reshard_after_forward=True)
    asked = FSDP | {"FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer, MistralDecoderLayer"}
    asked |= {"FSDP_RESHARD_AFTER_FORWARD": "false"}
    assert requested_sharding(asked) == ShardingPlan(("LlamaDecoderLayer", "MistralDecoderLayer"), False)
    # FSDP1's names for the same choices
    assert sharding_refusal(FSDP | {"FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "FULL_SHARD"}) is None
    assert requested_sharding(FSDP | {"FSDP_RESHARD_AFTER_FORWARD": "SHARD_GRAD_OP"}).reshard_after_forward is False
    # one process holds the whole model anyway: nothing to shard
    assert requested_sharding(FSDP | {"WORLD_SIZE": "1"}) is None


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ({"FSDP_VERSION": "1", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}, "fsdp_sharding_strategy SHARD_GRAD_OP"),
        ({"FSDP_AUTO_WRAP_POLICY": "SIZE_BASED_WRAP"}, "fsdp_auto_wrap_policy SIZE_BASED_WRAP"),
        ({"FSDP_OFFLOAD_PARAMS": "true"}, "fsdp_offload_params"),
        ({"FSDP_ACTIVATION_CHECKPOINTING": "true"}, "model.gradient_checkpointing=true"),
        ({"FSDP_RESHARD_AFTER_FORWARD": "sometimes"}, "fsdp_reshard_after_forward sometimes"),
    ],
)
def test_fsdp_settings_preftune_cannot_honour_are_refused(setting: dict[str, str], expected: str) -> None:
    reason = sharding_refusal(FSDP | setting)
    assert reason is not None and expected in reason and "\n" not in reason


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["stages=[{name: a, objective: dpo}, {name: b, objective: exmate}]"], "trains one stage"),
        (["ref_refresh.mode=hard", "reference=copy", "lora.enabled=false"], "drop ref_refresh"),
        (["eval.gradient_cosine_every=2"], "eval.gradient_cosine_every=0"),
        (["optim.mixed_precision=fp16"], "bf16 or no"),
    ],
)
def test_run_parts_fsdp_cannot_shard_are_refused_before_any_model(
    overrides: list[str], expected: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in FSDP.items():
        monkeypatch.setenv(name, value)
    config = load_config(None, ["model.name=tiny-random", f"output_dir={tmp_path / 'out'}", *overrides])
    with pytest.raises(SpecError, match="accelerate launch asked for FSDP") as refused:
        check(config)
    assert expected in str(refused.value)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")  # the same run, launched for DDP: accepted
    check(load_config(None, ["model.name=tiny-random", f"output_dir={tmp_path / 'out'}", *overrides]))


def test_the_units_are_the_decoder_layers_or_the_named_class() -> None:
    model = load_model("tiny-random", dtype="float32")
    (layer,) = layer_classes(model, ShardingPlan())  # transformers' _no_split_modules
    assert layer.__name__.endswith("DecoderLayer")
    assert layer_classes(model, ShardingPlan((layer.__name__,))) == {layer}
    with pytest.raises(PreftuneError, match="fsdp_transformer_layer_cls_to_wrap: DecoderBlock names no module"):
        layer_classes(model, ShardingPlan(("DecoderBlock",)))


def test_current_tensors_are_the_state_dict_of_an_unsharded_model() -> None:
    """What the sampling copy reads (whole parameters inside a sharded phase) is, unsharded, the
    state dict itself: every name (the tied head and persistent buffers too), every tensor."""
    model = apply_lora(load_model("tiny-random", dtype="float32"), rank=4, alpha=8, dropout=0.0)
    state = model.state_dict()
    current = dict(current_tensors(model))
    assert list(current) == list(state)
    assert all(current[name] is state[name] or torch.equal(current[name], state[name]) for name in state)
    assert not is_sharded(model)
    held = [id(p) for p in model.parameters()]
    with whole_parameters(model):  # nothing to gather: the very tensors the model holds
        assert [id(p) for p in model.parameters()] == held
