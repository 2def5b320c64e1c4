"""The policy sharded over processes with FSDP2 (``fully_shard``), as ``accelerate launch`` asks.

``accelerate launch`` with an FSDP config sets ``ACCELERATE_USE_FSDP=true`` and the config's
``FSDP_*`` variables in every process. accelerate 1.16 shards only on an accelerator: on a CPU it
runs DDP and ignores the config. So preftune shards the policy itself, alike on every device:
each decoder layer (the model's ``_no_split_modules``, or ``fsdp_transformer_layer_cls_to_wrap``)
and then the whole model become FSDP2 units (PyTorch's ``fully_shard``, the one accelerate's
``fsdp_version: 2`` applies), before the optimiser is made, so each process keeps its shard of
the parameters, gradients and optimiser state. A training step's forwards and backward gather
each layer's parameters when they need them and reduce-scatter its gradients.

Whatever else forwards the policy or reads its parameters (held-out evaluation, the reference's
precompute with the adapters off, a round's sampling and its reference scoring, checkpoints, the
saved model) runs inside :func:`whole_parameters`: every process gathers the whole parameters once,
its forwards then need no other process (each may run as many as its share asks), and the shards
come back after. Such phases hold the whole model in each process for their duration.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

FSDP_VARIABLE = "ACCELERATE_USE_FSDP"
TRUE = ("true", "1", "yes")


@dataclass(frozen=True)
class ShardingPlan:
    """What an FSDP launch asked: the layer classes made units of their own (empty: the model's
    ``_no_split_modules``) and whether a unit's gathered parameters are freed after its forward."""

    layer_classes: tuple[str, ...] = ()
    reshard_after_forward: bool = True


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "false").lower() in TRUE


def requested_sharding(environ: Mapping[str, str] | None = None) -> ShardingPlan | None:
    """The sharding ``accelerate launch`` asked for, or None (no FSDP config). Settings preftune
    cannot honour are refused by :func:`sharding_refusal`, which the run's checks call first."""
    env = os.environ if environ is None else environ
    if not _flag(env, FSDP_VARIABLE) or int(env.get("WORLD_SIZE", "1")) < 2:  # one process holds it all anyway
        return None
    classes = tuple(c.strip() for c in env.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "").split(",") if c.strip())
    reshard = env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() in ("true", "full_shard", "1")
    return ShardingPlan(classes, reshard)


def sharding_refusal(environ: Mapping[str, str] | None = None) -> str | None:
    """Why this FSDP launch cannot train as its config asks, in one line, or None."""
    env = os.environ if environ is None else environ
    if not _flag(env, FSDP_VARIABLE):
        return None
    prefix = "accelerate launch asked for FSDP with"
    strategy = env.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").upper()
    if env.get("FSDP_VERSION", "2") == "1" and strategy not in ("FULL_SHARD", "1"):
        return f"{prefix} fsdp_sharding_strategy {strategy}: preftune shards fully (FULL_SHARD, or fsdp_version 2)"
    policy = env.get("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    if policy != "TRANSFORMER_BASED_WRAP":
        return f"{prefix} fsdp_auto_wrap_policy {policy}: preftune wraps each decoder layer (TRANSFORMER_BASED_WRAP)"
    if env.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower() not in ("true", "false", "full_shard", "shard_grad_op"):
        return f"{prefix} fsdp_reshard_after_forward {env['FSDP_RESHARD_AFTER_FORWARD']}: true or false"
    if _flag(env, "FSDP_OFFLOAD_PARAMS"):
        return f"{prefix} fsdp_offload_params: preftune does not offload the shards; set it false"
    if _flag(env, "FSDP_ACTIVATION_CHECKPOINTING"):
        return f"{prefix} fsdp_activation_checkpointing: set model.gradient_checkpointing=true instead"
    return None


def layer_classes(model: nn.Module, plan: ShardingPlan) -> set[type]:
    """The module classes that become units: ``plan.layer_classes`` by name, else the model's
    ``_no_split_modules`` (transformers' decoder layers); refused when they name none of its modules."""
    wanted = set(plan.layer_classes) or set(_no_split_modules(model))
    found = {type(m) for m in model.modules() if type(m).__name__ in wanted}
    if not found:
        from preftune.errors import PreftuneError

        named = ", ".join(sorted(wanted)) or "no class (the model declares no _no_split_modules)"
        raise PreftuneError(
            f"fsdp_transformer_layer_cls_to_wrap: {named} names no module of the model; set it to its decoder "
            "layer's class (e.g. LlamaDecoderLayer)"
        )
    return found


def _no_split_modules(model: nn.Module) -> list[str]:
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return list(names)
    return []


# Each sharded model's root unit: the module whose forward runs the model in training (the trainer's
# PolicyLogProbs, which applies the decoder and the LM head by hand: its forward must gather the
# parameters outside the decoder layers, the embeddings, final norm and head).
_ROOTS: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()
_WHOLE: weakref.WeakSet[nn.Module] = weakref.WeakSet()  # the roots whose parameters are whole now


def shard(root: nn.Module, model: nn.Module, plan: ShardingPlan) -> None:
    """Make each layer of ``model`` of :func:`layer_classes` an FSDP2 unit over every process, then
    ``root`` (a module holding ``model``, whose forward runs it in training) the root unit, holding
    the rest (in place: the parameters become DTensors, each process holding its shard)."""
    from torch.distributed.fsdp import fully_shard

    if model in _ROOTS:
        raise ValueError("this model is sharded already")
    classes = tuple(layer_classes(model, plan))
    for module in list(model.modules()):
        if isinstance(module, classes):
            fully_shard(module, reshard_after_forward=plan.reshard_after_forward)
            module._preftune_reshard_after_forward = plan.reshard_after_forward
    # the root keeps its parameters after forward, fully_shard's own choice for a root (backward needs them next)
    fully_shard(root, reshard_after_forward=False)
    # FSDP2 warns that the root's output (the log-prob records) holds views, whose in-place change would skip
    # its pre-backward gather; the objectives are pure functions of their records and change none in place.
    warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module \(FSDPPolicyLogProbs\) returned a view")
    root._preftune_reshard_after_forward = False
    # FSDP2 takes for root the first unit whose forward runs; a phase that forwards the model by hand (held-out
    # scoring, sampling) may come first, so the root is settled now. (FSDP2 has no public call for it.)
    root._get_fsdp_state()._lazy_init()
    _ROOTS[model] = root


def units(model: nn.Module) -> list[Any]:
    """The FSDP2 units of ``model`` (or of its root, when :func:`shard` sharded it), root first;
    empty when it is not sharded."""
    from torch.distributed.fsdp import FSDPModule

    root = _ROOTS.get(model, model)
    return [m for m in root.modules() if isinstance(m, FSDPModule)]


def is_sharded(model: nn.Module) -> bool:
    return bool(units(model))


@contextmanager
def whole_parameters(model: nn.Module) -> Iterator[None]:
    """Inside: every parameter of ``model`` whole in this process, so that code reading parameters
    or forwarding the model runs as on an unsharded one, with no exchange between processes.
    Collective: every process must enter together. Nothing happens for an unsharded model.
    Parameters written inside are lost when the shards come back: use :func:`load_whole` to write."""
    found = units(model)
    if not found or found[0] in _WHOLE:  # unsharded, or already whole (a phase inside another)
        yield
        return
    _WHOLE.add(found[0])
    for unit in found:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        _WHOLE.discard(found[0])
        for unit in found:
            unit.reshard()
            unit.set_reshard_after_forward(getattr(unit, "_preftune_reshard_after_forward", True), recurse=False)


def load_whole(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write whole tensors (by parameter name) into ``model``'s parameters: each process keeps its
    own shard of each (no exchange: every process holds ``tensors``), or the tensor itself when
    the model is not sharded."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            param = params[name]
            if isinstance(param, DTensor):
                mine = distribute_tensor(value.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None)
                param.to_local().copy_(mine.to_local())
            else:
                param.copy_(value)


def whole_norm(norm: torch.Tensor) -> float:
    """A gradient norm as a float, gathered first when FSDP left it a DTensor."""
    from torch.distributed.tensor import DTensor

    return float(norm.full_tensor() if isinstance(norm, DTensor) else norm)


def optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A sharded optimiser's state gathered whole, keyed by parameter name (every process takes
    part; each gets the whole state, in host memory)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(root, optimizer, options=options)


def load_optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a whole optimiser state (:func:`optimizer_state`'s) into a sharded optimiser: each
    process keeps its shards (every process holds ``state``)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(root, optimizer, state, options=StateDictOptions(full_state_dict=True))


def unsharded_copy(model: nn.Module) -> nn.Module:
    """A plain (unsharded) module equal to the sharded ``model``, in every process (all take part):
    for what follows training and reads the model as a whole (the saved adapter, merged or full
    weights, answers). Its skeleton is built on the meta device with ``model``'s buffers
    (:func:`~preftune.modeling.merged.empty_copy`; FSDP shards no buffer), wrapped in ``model``'s LoRA
    config, then given the gathered weights."""
    from peft import PeftModel, get_peft_model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from preftune.modeling.merged import empty_copy

    root = _ROOTS[model]
    prefix = next(name for name, module in root.named_modules() if module is model) + "."
    whole = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True))
    weights = {k.removeprefix(prefix): v for k, v in whole.items() if k.startswith(prefix)}
    plain = empty_copy(model, next(iter(weights.values())).dtype)
    if isinstance(model, PeftModel):
        with torch.device("meta"):
            plain = get_peft_model(plain, model.peft_config[model.active_adapter])
    plain.load_state_dict(weights, strict=False, assign=True)
    if getattr(plain.config, "tie_word_embeddings", False):
        plain.tie_weights()
    missing = [n for n, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"unsharded_copy: no weight gathered for {missing[:3]}")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    for name, param in plain.named_parameters():
        param.requires_grad_(name in trainable)
    return plain.train(model.training)
