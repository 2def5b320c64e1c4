"""LoRA under bf16 autocast without losing the update: the adapter's sum kept in float32.

peft's LoRA layer computes ``base(x) + B(A(x))·s`` and returns it in the base output's dtype.
Under bf16 autocast the base output is bf16, so it already lies on bf16's grid, and adding an
update smaller than half a grid step (2⁻⁹ of the value) rounds back to exactly the base output:
a young adapter (B starts at zero; at lr 5e-6 its update stays below that for many steps)
changes nothing, and the policy's log-probs equal the reference's bit for bit, in the loss's
margins and in every metric (issue 19: SmolLM2 + LoRA r 8 at TRL's DPO settings showed a
held-out margin of −0.01 under bf16 where float32 showed 1.12).

:func:`keep_adapters_in_float32` widens the base layer's output of every LoRA layer to float32
under autocast (the product still runs in bf16: only its result is widened), so peft's sum is
taken in float32 and keeps the update; ``A`` and ``B`` still run in bf16, whose own rounding
errs by 2⁻⁸ *of the update*, which does not matter. Where the layer feeds the float32 residual
stream (``o_proj``, ``down_proj``) the update is kept exactly; where it feeds another bf16
product, rounding an off-grid value is unbiased on average, so the update survives in
expectation instead of vanishing. Weights, saved files and float32 runs are untouched.

Measured on SmolLM2 (benchmarks/adapter_precision_cost.py, docs/benchmarks.md): computing A and
B in float32 too brought the per-sequence effect of a trained adapter no closer to float32's
(correlation 0.72 against 0.68) for nearly three times the cost (+28% of a training step
against +10% for this and the float32 LM head together).
"""

from __future__ import annotations

import torch
from torch import nn

LOW_PRECISION = (torch.bfloat16, torch.float16)


def _widen_output(module: nn.Module, args: object, output: object) -> object:
    """Forward hook on a LoRA layer's base layer: a bf16/fp16 output produced under autocast becomes float32."""
    if (
        isinstance(output, torch.Tensor)
        and output.dtype in LOW_PRECISION
        and torch.is_autocast_enabled(output.device.type)
    ):
        return output.float()
    return output


def keep_adapters_in_float32(model: nn.Module) -> int:
    """Make every LoRA linear layer of ``model`` (a peft model) add its update in float32 under
    autocast (see the module's docstring). Idempotent; returns the number of layers changed."""
    from peft.tuners.lora import Linear as LoraLinear

    changed = 0
    for module in model.modules():
        if isinstance(module, LoraLinear):
            base = module.get_base_layer()
            if not getattr(base, "_preftune_widened", False):
                base.register_forward_hook(_widen_output)
                base._preftune_widened = True
                changed += 1
    return changed
