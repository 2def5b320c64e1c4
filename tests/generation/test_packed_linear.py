"""Linear layers with oneDNN-packed weights (the sampling copy's on a CPU): the same products as
``F.linear``, a weight that can be replaced, and a model whose logits do not move when packed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from preftune.generation import packed_linear
from preftune.generation.copy_sampler import CopySampler
from preftune.modeling import load_model

pytestmark = pytest.mark.skipif(
    not packed_linear.packing_works(torch.float32, torch.device("cpu")), reason="no oneDNN packing on this build"
)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).norm() / want.float().norm())


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 1e-2)])
def test_a_packed_layer_multiplies_as_f_linear_and_takes_a_new_weight(dtype, tolerance):
    torch.manual_seed(0)
    linear = torch.nn.Linear(40, 24, dtype=dtype)
    x = torch.randn(2, 5, 40, dtype=dtype)
    layer = packed_linear.PackedLinear(linear, rows=10)
    with torch.no_grad():
        assert relative_error(layer(x), F.linear(x.float(), linear.weight.float(), linear.bias.float())) < tolerance
        new = torch.randn(24, 40)  # float32, as the merged policy hands it: cast to the layer's dtype
        layer.load(new)
        assert relative_error(layer(x), F.linear(x.float(), new.to(dtype).float(), linear.bias.float())) < tolerance
    with pytest.raises(ValueError, match="shape"):
        layer.load(torch.randn(40, 24))


def test_a_packed_model_gives_the_logits_of_the_plain_one():
    model = load_model("tiny-random").eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 7))
    with torch.no_grad():
        want = model(ids).logits
        packed = packed_linear.pack_linears(model)
        got = model(ids).logits
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    # every projection and the output head (tied to the embeddings, which keep their own weight)
    assert {name.rsplit(".", 2)[-2] for name in packed} == {
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"
    }  # fmt: skip
    assert model.model.embed_tokens.weight.shape == (model.config.vocab_size, model.config.hidden_size)
    assert relative_error(got, want) < 1e-5


def test_the_copy_packs_only_where_asked(monkeypatch):
    policy = load_model("tiny-random")
    on = CopySampler(torch.float32)
    on.refresh(policy)
    assert on.packed and "lm_head.weight" in on.packed
    monkeypatch.setattr(packed_linear, "PACK_LINEARS", False)
    off = CopySampler(torch.float32)
    off.refresh(policy)
    assert off.packed == {} and "lm_head.weight" in off.copy.state_dict()
    ids = torch.randint(0, policy.config.vocab_size, (3, 9))
    with torch.no_grad():
        assert relative_error(on.copy(ids).logits, off.copy(ids).logits) < 1e-5
