"""LoRA through peft: targets, and both saved forms load back with the same logits."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from omegaconf import ListConfig
from peft import PeftModel
from transformers import AutoModelForCausalLM

from preftune.errors import PreftuneError
from preftune.modeling import apply_lora, load_model, save_lora


def _perturbed_lora(model):
    lora = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():  # LoRA starts as the identity (B = 0); make it matter
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return lora.eval()


def test_all_linear_targets_the_decoder_never_the_head(tiny: torch.nn.Module) -> None:
    lora = apply_lora(tiny)
    names = [n for n, _ in lora.named_modules() if n.endswith(".lora_A")]
    assert len(names) == 2 * 7  # q, k, v, o, gate, up, down in each of 2 layers
    assert not any("lm_head" in n or "embed" in n for n in names)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_naming_the_head_is_refused(tiny: torch.nn.Module) -> None:
    with pytest.raises(PreftuneError, match="output layer"):
        apply_lora(tiny, target_modules=["q_proj", "lm_head"])


def test_adapter_and_merged_saves_load_back(tiny_path: Path, tmp_path: Path) -> None:
    lora = _perturbed_lora(load_model(tiny_path))
    ids = torch.randint(3, 49152, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = lora(ids).logits
        base = load_model(tiny_path)(ids).logits
    assert (expected - base).abs().max() > 1e-3  # the adapter changes the outputs

    adapter = save_lora(lora, tmp_path / "adapter")
    merged = save_lora(lora, tmp_path / "merged", merged=True)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    assert (merged / "model.safetensors").is_file() and not (merged / "adapter_config.json").exists()
    assert isinstance(lora, PeftModel) and any("lora_A" in n for n, _ in lora.named_modules())  # still wrapped

    reloaded = [
        PeftModel.from_pretrained(load_model(tiny_path), adapter),
        AutoModelForCausalLM.from_pretrained(adapter),  # finds the base through adapter_config.json
        load_model(merged),
    ]
    with torch.no_grad():
        for model, tolerance in zip(reloaded, (0.0, 0.0, 1e-4), strict=True):
            assert (model.eval()(ids).logits - expected).abs().max() <= tolerance


def test_last_layers_adapts_only_the_top_of_the_stack(tiny: torch.nn.Module) -> None:
    lora = apply_lora(tiny, last_layers=1)
    names = [n for n, _ in lora.named_modules() if n.endswith(".lora_A")]
    assert len(names) == 7 and all(".layers.1." in n for n in names)
    with pytest.raises(PreftuneError, match="between 1 and 2"):
        apply_lora(load_model("tiny-random"), last_layers=3)


def _adapted(lora) -> list[str]:
    """``layer.leaf`` of every module that got an adapter, e.g. ``1.q_proj``."""
    names = [n.removesuffix(".lora_A") for n, _ in lora.named_modules() if n.endswith(".lora_A")]
    return sorted(f"{n.split('.layers.')[1].split('.')[0]}.{n.rsplit('.', 1)[1]}" for n in names)


@pytest.mark.parametrize(
    "targets",
    [
        "q_proj,v_proj",
        " q_proj , v_proj ",
        ["q_proj", "v_proj"],
        ("q_proj", "v_proj"),
        ListConfig(["q_proj", "v_proj"]),
        ["self_attn.q_proj", "v_proj", "q_proj"],  # a dotted suffix; duplicates are harmless
        r".*\.(q|v)_proj",  # a regex, matched in full as peft does
    ],
)
def test_target_modules_in_every_form(tiny: torch.nn.Module, targets) -> None:
    assert _adapted(apply_lora(tiny, target_modules=targets)) == ["0.q_proj", "0.v_proj", "1.q_proj", "1.v_proj"]


@pytest.mark.parametrize("targets", [["all-linear"], "ALL-LINEAR", ListConfig(["all-linear"])])
def test_all_linear_in_other_spellings(tiny: torch.nn.Module, targets) -> None:
    assert len(_adapted(apply_lora(tiny, target_modules=targets))) == 2 * 7


def test_a_single_plain_name_is_a_name_not_a_regex(tiny: torch.nn.Module) -> None:
    # peft reads a bare string as a regex over full names, which "q_proj" never matches in full
    assert _adapted(apply_lora(tiny, target_modules="q_proj")) == ["0.q_proj", "1.q_proj"]


@pytest.mark.parametrize("targets", ["q_proj,v_proj", r".*_proj", r"model\.layers\.\d+\.mlp\.up_proj"])
def test_target_modules_compose_with_last_layers(tiny: torch.nn.Module, targets: str) -> None:
    adapted = _adapted(apply_lora(tiny, target_modules=targets, last_layers=1))
    assert adapted and all(name.startswith("1.") for name in adapted)


def test_unknown_names_are_one_line_with_the_linear_modules(tiny_path: Path) -> None:
    linear = "down_proj, gate_proj, k_proj, o_proj, q_proj, up_proj, v_proj"
    with pytest.raises(PreftuneError) as info:
        apply_lora(load_model(tiny_path), target_modules=["qproj"])
    assert str(info.value) == f"lora.target_modules: no module named 'qproj' in the model; linear modules: {linear}"
    with pytest.raises(PreftuneError, match=r"^lora.target_modules: no modules named 'qproj', 'vv' in the model; "):
        apply_lora(load_model(tiny_path), target_modules="qproj,v_proj,vv")
    with pytest.raises(PreftuneError, match=r"pattern '.\*qproj' matches no layer of the model; linear modules: down"):
        apply_lora(load_model(tiny_path), target_modules=".*qproj")
    with pytest.raises(PreftuneError, match=r"no module named 'embed_tokens' in the adapted layers \[1\]"):
        apply_lora(load_model(tiny_path), target_modules="embed_tokens", last_layers=1)
    with pytest.raises(PreftuneError, match=r"^lora.target_modules: 'self_attn' names LlamaAttention blocks"):
        apply_lora(load_model(tiny_path), target_modules="self_attn")
    with pytest.raises(PreftuneError, match=r"matches only the output layer"):
        apply_lora(load_model(tiny_path), target_modules="lm_h.*")
    for bad in ("", [], [1]):
        with pytest.raises(PreftuneError, match=r"^lora.target_modules"):
            apply_lora(load_model(tiny_path), target_modules=bad)


def test_what_peft_refuses_is_one_line(tiny: torch.nn.Module) -> None:
    with pytest.raises(PreftuneError, match=r"^LoRA could not be applied: dropout probability has to be between"):
        apply_lora(tiny, dropout=2.0)


def test_adapter_saved_on_another_base_names_and_loads_that_base(tiny_path: Path, tmp_path: Path) -> None:
    """A staged run: stage 2 trains an adapter on stage 1's merged weights, held in memory."""
    stage1 = _perturbed_lora(load_model(tiny_path))
    merged_dir = save_lora(stage1, tmp_path / "stage1-merged", merged=True)
    stage2 = _perturbed_lora(copy.deepcopy(stage1).merge_and_unload())  # still named after the tiny model
    ids = torch.randint(3, 49152, (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = stage2(ids).logits

    plain = save_lora(stage2, tmp_path / "plain")
    assert json.loads((plain / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny_path)
    adapter = save_lora(stage2, tmp_path / "adapter", base_model=merged_dir)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(merged_dir.resolve())
    assert stage2.peft_config["default"].base_model_name_or_path == str(tiny_path)  # the model itself unchanged
    with torch.no_grad():
        reloaded = AutoModelForCausalLM.from_pretrained(adapter).eval()(ids).logits
        wrong = AutoModelForCausalLM.from_pretrained(plain).eval()(ids).logits
    assert (reloaded - expected).abs().max() <= 1e-4
    assert (wrong - expected).abs().max() > 1e-3  # what naming the original base gives
    with pytest.raises(PreftuneError, match="merged save"):
        save_lora(stage2, tmp_path / "x", merged=True, base_model=merged_dir)


# --- bf16 autocast: an update below bf16's resolution is kept (issue 19) ------------------------------------------


def _small_update(model, scale: float):
    lora = apply_lora(model, rank=4, alpha=8)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale, generator=torch.Generator().manual_seed(len(name)))
    return lora.eval()


def test_a_young_adapter_is_not_rounded_away_under_bf16_autocast(tiny: torch.nn.Module) -> None:
    """B ~ N(0, 3e-5): the update B·A·x·s is ~1e-4 of the layer's output, far below half of bf16's
    step (2⁻⁹ ≈ 2e-3). peft alone adds it to the bf16 base output, which lies on bf16's grid, and the
    sum rounds back to exactly that output: the layer ignored its adapter. With the sum taken in
    float32 the layer's output minus its base output is the update (computed in bf16 under
    autocast: to 2⁻⁸ of itself)."""
    lora = _small_update(tiny, 3e-5)
    layer = lora.base_model.model.model.layers[0].self_attn.o_proj
    x = torch.randn(6, 5, layer.in_features, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        update = layer.lora_B["default"](layer.lora_A["default"](x)) * layer.scaling["default"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            adapted = layer(x)
            with lora.disable_adapter():
                base = layer(x)
    assert adapted.dtype == torch.float32 and update.abs().max() < 1e-3 * base.abs().mean()
    # (b + d) − b in float32 errs by float32's rounding of b: a few 1e-7 of the output's size
    tolerance = 4 * torch.finfo(torch.float32).eps * float(base.abs().max())
    torch.testing.assert_close(adapted - base, update, rtol=2**-7, atol=tolerance)
    assert tolerance < 0.1 * float(update.abs().mean())  # so rounding the update away would fail


def test_the_float32_sum_changes_nothing_in_float32_or_on_disk(
    tiny: torch.nn.Module, tiny_path: Path, tmp_path: Path
) -> None:
    """Without autocast the widened layers compute exactly what peft's do, and the saved adapter
    has peft's names and float32 tensors."""
    from peft.tuners.lora import Linear as LoraLinear

    from tests.modeling.batches import random_batch

    lora = _small_update(tiny, 0.05)
    batch = random_batch(pairs=2, length=24, vocab=tiny.config.vocab_size, seed=5)
    layers = [m for m in lora.modules() if isinstance(m, LoraLinear)]
    assert layers and all(getattr(m.get_base_layer(), "_preftune_widened", False) for m in layers)
    with torch.no_grad():
        widened = lora(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        for m in layers:  # back to peft's own layers
            m.get_base_layer()._forward_hooks.clear()
        plain = lora(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(widened, plain, rtol=0, atol=0)
    save_lora(lora, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load_model(tiny_path), str(tmp_path / "adapter"))
    assert {p.dtype for n, p in reloaded.named_parameters() if "lora_" in n} == {torch.float32}
