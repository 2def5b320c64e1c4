"""TRL's config names, read as preftune's keys (docs/from-trl.md).

A TRL user's YAML (``DPOConfig`` fields, with ``ModelConfig``'s LoRA fields and ``ScriptArguments``'
``dataset_name``) trains as it is with ``preftune train --trl FILE``: every key is translated into
preftune's, TRL's defaults apply where TRL has its own (LoRA off unless ``use_peft``, learning rate
1e-6, gradient checkpointing on), and a key preftune does not offer stops the run with every such
key named at once. In a preftune config, a TRL name is not read silently: the error names the
preftune key it means.

``per_device_train_batch_size`` is per process and per accumulation step in TRL; preftune's
``optim.batch_size`` is the global batch, so it is the product of the three (processes from
``WORLD_SIZE``, as ``torchrun`` sets it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from preftune.errors import PreftuneError

# TRL's key -> preftune's key, where the value carries over as it is
SAME_VALUE = {
    "model_name_or_path": "model.name",
    "dataset_name": "data.train",
    "output_dir": "output_dir",
    "learning_rate": "optim.lr",
    "num_train_epochs": "optim.epochs",
    "lr_scheduler_type": "optim.schedule",
    "warmup_ratio": "optim.warmup_ratio",
    "weight_decay": "optim.weight_decay",
    "max_grad_norm": "optim.max_grad_norm",
    "seed": "optim.seed",
    "gradient_accumulation_steps": "optim.grad_accumulation",
    "per_device_eval_batch_size": "eval.batch_size",
    "max_length": "data.max_length",
    "max_prompt_length": "data.max_prompt_length",
    "eval_steps": "eval.every",
    "save_steps": "save_every",
    "save_total_limit": "keep_checkpoints",
    "gradient_checkpointing": "model.gradient_checkpointing",
    "use_peft": "lora.enabled",
    "lora_r": "lora.rank",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "lora_target_modules": "lora.target_modules",
    "dtype": "model.dtype",
    "torch_dtype": "model.dtype",
    "ref_model_mixup_alpha": "ref_refresh.alpha",
    "ref_model_sync_steps": "ref_refresh.every",
}

# TRL's keys whose preftune value is computed: what each becomes (for the docs and the hints)
COMPUTED = {
    "per_device_train_batch_size": "optim.batch_size (× gradient_accumulation_steps × processes: a global batch)",
    "max_steps": "optim.max_steps (TRL's -1: none)",
    "bf16": "optim.mixed_precision (true: bf16, false: no)",
    "report_to": "trackers (none: [])",
    "beta": "each loss term's beta: dpo(beta=...)",
    "loss_type": "objective: each of TRL 1.16's loss types is a term (sigmoid: dpo, sft: mle, the rest by their name)",
    "loss_weights": "the objective's weights: 0.8*dpo + 0.2*mle",
    "label_smoothing": "the label_smoothing of dpo, robust, exo_pair, aot and aot_unpaired",
    "discopop_tau": "discopop's tau",
    "ld_alpha": "each loss term's ld_alpha (LD-DPO)",
    "use_weighting": "each loss term's wpo=True (WPO)",
    "f_divergence_type": "each margin term's divergence (reverse_kl, forward_kl, js, alpha)",
    "f_alpha_divergence_coef": "each margin term's divergence_alpha",
    "sync_ref_model": "ref_refresh.mode (true: soft, false: none)",
}

# TRL's keys that change nothing here, with why
IGNORED = {
    "logging_steps": "preftune logs every step",
    "logging_first_step": "preftune logs every step",
    "eval_strategy": "held-out evaluation runs at the start, every eval.every steps and at the end",
    "save_strategy": "checkpoints every save_every steps",
    "do_train": "preftune train trains",
    "do_eval": "held-out pairs are always scored",
    "remove_unused_columns": "preftune reads only the columns it needs",
    "dataset_num_proc": "tokenisation runs in the process",
    "push_to_hub": "preftune writes outputs locally (from_pretrained loads them)",
    "overwrite_output_dir": "an output_dir with checkpoints is refused; resume it with --resume",
    "precompute_ref_log_probs": "the reference is precomputed by default (reference: auto)",
}

# On-policy TRL keys (OnlineDPOConfig, RLOOConfig): such a run is written in preftune's keys
ONLINE = {
    "max_new_tokens": "sampling.max_new_tokens",
    "temperature": "sampling.temperature",
    "top_p": "sampling.top_p",
    "top_k": "sampling.top_k",
    "missing_eos_penalty": "online.missing_eos_penalty",
    "num_generations": "sampling.n",
    "num_iterations": "online.passes",
    "use_vllm": "sampling.backend=vllm",
    "vllm_gpu_memory_utilization": "sampling.vllm_gpu_memory",
    "reward_funcs": "online.labeller=function:MODULE:FN",
    "reward_model_path": "online.labeller=rm:PATH",
    "judge": "online.labeller=judge:SPEC",
}

# Where TRL's defaults are not preftune's: set unless the file sets them
TRL_DEFAULTS = {
    "lora.enabled": False,  # ModelConfig.use_peft
    "optim.lr": 1e-6,  # DPOConfig.learning_rate
    "model.gradient_checkpointing": True,  # TRL's base config
    "lora.dropout": 0.05,  # ModelConfig.lora_dropout
}

# TRL 1.16's loss_type -> preftune's objective term (docs/papers.md, "TRL's losses")
LOSSES = {
    "sigmoid": "dpo", "ipo": "ipo", "hinge": "hinge", "sigmoid_norm": "sigmoid_norm", "robust": "robust",
    "exo_pair": "exo_pair", "discopop": "discopop", "nca_pair": "nca_pair", "bco_pair": "bco_pair",
    "sppo_hard": "sppo_hard", "apo_zero": "apo_zero", "apo_down": "apo_down", "aot": "aot",
    "aot_unpaired": "aot_unpaired", "aot_pair": "aot_unpaired", "sft": "mle",
}  # fmt: skip
LOSS_KEYS = ("loss_type", "loss_weights", "beta", "label_smoothing", "discopop_tau", "ld_alpha", "use_weighting",
             "f_divergence_type", "f_alpha_divergence_coef")  # fmt: skip
DIVERGENCES = {
    "reverse_kl": "reverse_kl",
    "forward_kl": "forward_kl",
    "js_divergence": "js",
    "alpha_divergence": "alpha",
}
MARGIN_LOSSES = ("sigmoid", "sigmoid_norm", "hinge", "ipo", "exo_pair", "robust", "discopop")  # f-DPO's, and sft
SMOOTHED = ("sigmoid", "robust", "exo_pair", "aot", "aot_unpaired", "aot_pair")  # the losses reading label_smoothing
SORTED = ("aot", "aot_unpaired", "aot_pair")


def trl_meaning(name: str) -> str | None:
    """What TRL's key ``name`` is here (a preftune key, a computed value, or no setting and why);
    None when TRL has no such key."""
    if name in SAME_VALUE:
        return SAME_VALUE[name]
    if name in COMPUTED:
        return COMPUTED[name]
    if name in IGNORED:
        return f"no setting ({IGNORED[name]})"
    if name in ONLINE:
        return f"{ONLINE[name]} (an on-policy run: online.rounds > 0)"
    return None


def _weighted_losses(values: Mapping[str, Any]) -> list[tuple[str, float]]:
    """TRL's ``loss_type`` (a name or a list; default ``[sigmoid]``) with its ``loss_weights`` (default 1 each)."""
    losses = values.get("loss_type", ["sigmoid"])
    losses = [losses] if isinstance(losses, str) else list(losses)
    unknown = [loss for loss in losses if loss not in LOSSES]
    if unknown or not losses:
        raise PreftuneError(
            f"TRL's loss_type {losses}: preftune reads {', '.join(LOSSES)} here; write the objective in preftune's "
            "terms instead (objective=..., see preftune objectives)"
        )
    weights = values.get("loss_weights") or [1.0] * len(losses)
    if len(weights) != len(losses):
        raise PreftuneError(f"TRL's loss_weights {list(weights)} and loss_type {losses} differ in length")
    return list(zip(losses, map(float, weights), strict=True))


def _refuse_unread(values: Mapping[str, Any], losses: list[str]) -> None:
    """Settings no listed loss reads (TRL ignores or refuses them), and those with no counterpart: one line each."""
    divergence = values.get("f_divergence_type", "reverse_kl")
    if divergence not in DIVERGENCES:
        raise PreftuneError(f"TRL's f_divergence_type {divergence!r}: preftune reads {', '.join(DIVERGENCES)}")
    if divergence != "reverse_kl" and not set(losses) <= {*MARGIN_LOSSES, "sft"}:
        raise PreftuneError(f"TRL's f_divergence_type applies to {', '.join(MARGIN_LOSSES)} and sft, not {losses}")
    if values.get("f_alpha_divergence_coef", 0.5) != 0.5 and divergence != "alpha_divergence":
        raise PreftuneError("TRL's f_alpha_divergence_coef is read only with f_divergence_type: alpha_divergence")
    if values.get("label_smoothing") and not set(losses) & set(SMOOTHED):
        raise PreftuneError(f"TRL's label_smoothing applies to {', '.join(SMOOTHED[:5])}, not to {losses}")
    if values.get("discopop_tau", 0.05) != 0.05 and "discopop" not in losses:
        raise PreftuneError("TRL's discopop_tau applies to loss_type discopop only")
    if values.get("use_weighting") and set(losses) & {*SORTED, "sft"}:
        raise PreftuneError(
            "TRL's use_weighting (WPO) cannot weigh aot or aot_unpaired (batch-sorted) or sft (preftune's mle has no "
            "wpo): drop it or those loss types"
        )
    if "exo_pair" in losses and not values.get("label_smoothing"):
        raise PreftuneError("TRL's exo_pair needs label_smoothing > 0 (the EXO paper suggests 1e-3), as TRL does")


def _term(loss: str, values: Mapping[str, Any]) -> str:
    """One of TRL's loss types as a preftune term with TRL's settings that it reads."""
    name = LOSSES[loss]
    if name == "mle":  # TRL's sft: NLL of the chosen response per token (no β, no reference)
        return "mle"
    params = {"beta": float(values.get("beta", 0.1))}
    if loss == "ipo":
        params["average"] = True  # TRL's IPO scores mean log-probabilities per token
    if loss in SMOOTHED and (values.get("label_smoothing") or loss == "robust"):
        params["label_smoothing"] = float(values.get("label_smoothing", 0.0))  # robust: TRL's 0 default, not our 0.1
    if loss == "discopop" and "discopop_tau" in values:
        params["tau"] = float(values["discopop_tau"])
    if values.get("ld_alpha") is not None and float(values["ld_alpha"]) != 1.0:
        params["ld_alpha"] = float(values["ld_alpha"])
    if values.get("use_weighting"):
        params["wpo"] = True
    divergence = DIVERGENCES[values.get("f_divergence_type", "reverse_kl")]
    if divergence != "reverse_kl":
        params["divergence"] = divergence
        if divergence == "alpha":
            params["divergence_alpha"] = float(values.get("f_alpha_divergence_coef", 0.5))
    return f"{name}({', '.join(f'{key}={value!r}' for key, value in params.items())})"


def _objective(values: Mapping[str, Any]) -> str | None:
    """The objective string of TRL 1.16's loss settings (:data:`LOSS_KEYS`): each loss type a term with the
    settings it reads, a list with ``loss_weights`` a weighted sum; None when none is set."""
    if not set(LOSS_KEYS) & set(values):
        return None
    weighted = _weighted_losses(values)
    _refuse_unread(values, [loss for loss, _ in weighted])
    parts = [(_term(loss, values), weight) for loss, weight in weighted]
    return " + ".join(term if weight == 1.0 else f"{weight!r}*{term}" for term, weight in parts)


_COMPUTE: dict[str, Callable[[Any, Mapping[str, Any]], tuple[str, Any] | None]] = {
    "per_device_train_batch_size": lambda v, all_: (
        "optim.batch_size",
        int(v) * int(all_.get("gradient_accumulation_steps", 1)) * int(os.environ.get("WORLD_SIZE", "1")),
    ),
    "max_steps": lambda v, _: ("optim.max_steps", None if int(v) < 0 else int(v)),
    "bf16": lambda v, _: ("optim.mixed_precision", "bf16" if v else "no"),
    "sync_ref_model": lambda v, _: ("ref_refresh.mode", "soft" if v else "none"),
    "report_to": lambda v, _: ("trackers", [] if v in ("none", None, ["none"]) else [v] if isinstance(v, str) else v),
}


def translate(values: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """TRL's top-level keys and values -> (preftune's dotted keys and values, TRL's defaults included;
    the keys ignored, each with why). Every key preftune does not know is named in one error."""
    online = [k for k in values if k in ONLINE]
    if online:
        raise PreftuneError(
            f"{where}: on-policy TRL keys ({', '.join(online)}): --trl reads DPOConfig's; write an "
            "on-policy run in preftune's keys (online.rounds, sampling.n, ...; docs/from-trl.md has the table)"
        )
    unknown = [k for k in values if k not in SAME_VALUE and k not in COMPUTED and k not in IGNORED]
    if unknown:
        raise PreftuneError(
            f"{where}: TRL keys preftune does not offer: {', '.join(unknown)} (docs/from-trl.md "
            "lists every key it reads; write these in preftune's keys or remove them)"
        )
    out: dict[str, Any] = dict(TRL_DEFAULTS)
    for key, value in values.items():
        if key in SAME_VALUE:
            out[SAME_VALUE[key]] = value
        elif key in _COMPUTE:
            target, converted = _COMPUTE[key](value, values)  # type: ignore[misc]
            out[target] = converted
    objective = _objective(values)
    if objective is not None:
        out["objective"] = objective
    ignored = [f"{key} ({IGNORED[key]})" for key in values if key in IGNORED]
    return out, ignored
