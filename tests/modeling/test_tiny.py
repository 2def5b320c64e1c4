"""The tiny random model: deterministic, small, with SmolLM2's tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from preftune.modeling import build_tiny_model, load_model, load_tokenizer


def test_same_seed_same_weights_other_seed_other_weights(tiny_path: Path, tmp_path: Path) -> None:
    ours = load_file(tiny_path / "model.safetensors")
    again = load_file(build_tiny_model(tmp_path / "again", seed=0) / "model.safetensors")
    other = load_file(build_tiny_model(tmp_path / "other", seed=1) / "model.safetensors")
    assert ours.keys() == again.keys() and all(torch.equal(ours[k], again[k]) for k in ours)
    assert not torch.equal(ours["model.embed_tokens.weight"], other["model.embed_tokens.weight"])


def test_shape_and_tokenizer(tiny_path: Path, embedded_path: Path) -> None:
    model = load_model("tiny-random")
    config = model.config
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads) == (2, 64, 4)
    assert config.vocab_size == 49152 and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) < 4_000_000
    tiny_tok, real_tok = load_tokenizer("tiny-random"), load_tokenizer(embedded_path)
    text = "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    assert tiny_tok(text)["input_ids"] == real_tok(text)["input_ids"]
    assert tiny_tok.chat_template == real_tok.chat_template
