"""A tiny random Llama with SmolLM2's real tokenizer, for tests and examples.

Two layers, hidden size 64, four heads (two key/value heads, so grouped-query attention is
exercised as in SmolLM2), MLP 128, tied embeddings and SmolLM2's vocabulary of 49,152 tokens, in
float32: about 3.3 M parameters, nearly all of them the embedding. The weights depend only on
the seed, so two machines build the same model. The tokenizer is copied from the embedded
model's cache folder (:mod:`preftune.modeling.embedded`), so the first call may convert the
GGUF first.
"""

from __future__ import annotations

from pathlib import Path

import torch

from preftune.modeling.cache import atomic_directory, models_dir
from preftune.modeling.embedded import ensure_embedded_model

TINY_NAME = "tiny-random"
TINY_SHAPE = {
    "num_hidden_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 2048,
}
# Wider than the usual 0.02, so the random model's next-token distributions are far from
# uniform and its log-probs and gradients are not all alike.
TINY_INIT_STD = 0.2
TINY_VERSION = 1  # bump when the recipe changes, so old cached folders are not reused


def tiny_model_path(seed: int = 0) -> Path:
    """The folder of the tiny random model for ``seed``, built (in a second or two) on first use."""
    dest = models_dir() / f"{TINY_NAME}-v{TINY_VERSION}-seed{seed}"
    if not (dest / "config.json").is_file():
        build_tiny_model(dest, seed)
    return dest


def build_tiny_model(dest: Path, seed: int = 0) -> Path:
    """Create the tiny model and save it with SmolLM2's tokenizer into ``dest``, atomically."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(ensure_embedded_model())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        initializer_range=TINY_INIT_STD,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        rope_theta=100000.0,
        dtype="float32",
        **TINY_SHAPE,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.float32)
    with atomic_directory(Path(dest)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(dest)
