"""LoRA through peft: targets, and both saved forms load back with the same logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
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
