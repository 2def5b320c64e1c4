"""Linear layers whose weights are pre-packed in oneDNN's blocked layout, for a frozen sampling copy on a CPU.

Why: a decoding step multiplies 16 rows by every weight of the model. At that size ``F.linear``
lays the weight out for the kernel on every call; a weight packed once (as ``torch.compile``'s
CPU freezing pass does) skips that. Measured on an AMD EPYC (Zen 4, AVX-512 BF16, 2 threads,
torch 2.13), SmolLM2-135M's layers in bfloat16, 16 rows: 576 → 1536 in 117 µs instead of 177 µs
(weights rolling out of cache as in a model), the 49,152-token head in 2.9 ms instead of 5.2 ms;
a whole round of sampling (16 rows × 64 tokens) 4.9 s instead of 6.1 s, the same tokens drawn.

How: :func:`pack_linears` replaces every ``nn.Linear`` of a model that only samples by a
:class:`PackedLinear` holding ``torch.ops.mkldnn._reorder_linear_weight(W)`` and calling
``torch.ops.mkldnn._linear_pointwise`` (the ops inductor's CPU freezing emits; private to torch,
hence :func:`packing_works`, which checks them against ``F.linear`` once and turns packing off
where they are missing or disagree). The plain weights are dropped: the copy holds each weight once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Pack the sampling copy's linear layers where :func:`packing_works`; a switch for tests and benchmarks.
PACK_LINEARS = True


def _pack(weight: torch.Tensor, rows: int | None) -> torch.Tensor:
    """``[out, in]`` → the same weight in oneDNN's layout for products with about ``rows`` rows."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), rows)


class PackedLinear(torch.nn.Module):
    """``y = x Wᵀ + b`` for ``x`` ``[..., in]`` → ``[..., out]``, W packed; frozen (no gradient flows).

    Args:
        linear: the layer to replace (its weight is packed, its bias kept).
        rows: the rows a product is expected to have (the packing's hint; any count works).
    """

    def __init__(self, linear: torch.nn.Linear, rows: int | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features, self.rows = linear.in_features, linear.out_features, rows
        self.dtype = linear.weight.dtype
        self.bias = None if linear.bias is None else torch.nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.register_buffer("packed", _pack(linear.weight, rows), persistent=False)

    def load(self, weight: torch.Tensor) -> None:
        """Take ``weight`` ``[out, in]`` (any dtype: cast to the layer's) as the layer's weight."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            shape = (self.out_features, self.in_features)
            raise ValueError(f"a weight of shape {tuple(weight.shape)} for a layer of shape {shape}")
        self.packed = _pack(weight.to(self.dtype), self.rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed for {self.rows} rows"


def packing_works(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether packed products run here and agree with ``F.linear`` (relative error ≤ 1e-2 for bf16, 1e-4 else)."""
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 32, generator=generator).to(dtype)
    x = torch.randn(2, 3, 32, generator=generator).to(dtype)
    bias = torch.randn(48, generator=generator).to(dtype)
    try:
        layer = torch.nn.Linear(32, 48, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
            got = PackedLinear(layer, 6)(x).float()
    except (RuntimeError, AttributeError, NotImplementedError):  # an op missing from this build or this CPU
        return False
    want = F.linear(x.float(), weight.float(), bias.float())
    tolerance = 1e-2 if dtype in (torch.bfloat16, torch.float16) else 1e-4
    return bool(((got - want).norm() <= tolerance * want.norm()).item())


def pack_linears(model: torch.nn.Module, rows: int | None = None) -> dict[str, PackedLinear]:
    """Replace every ``nn.Linear`` of ``model`` (in place) by a :class:`PackedLinear`; the new layers by
    their weight's name in the model (``model.layers.0.mlp.up_proj.weight``). A weight tied to
    another parameter (the output head to the embeddings) is packed apart: the other keeps its own."""
    packed: dict[str, PackedLinear] = {}
    for parent_name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                layer = PackedLinear(child, rows)
                setattr(parent, child_name, layer)
                packed[f"{parent_name}.{child_name}.weight".lstrip(".")] = layer
    return packed
