"""Loading by built-in name, folder or hub name; one-line errors."""

from __future__ import annotations

import time
from pathlib import Path

import huggingface_hub
import pytest
import torch

from preftune.errors import PreftuneError
from preftune.modeling import DTYPES, load_model, load_tokenizer, resolve_model


def test_builtin_names_and_folders(tiny_path: Path) -> None:
    assert resolve_model("tiny-random") == str(tiny_path)
    model = load_model(tiny_path, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert model.config._attn_implementation == "sdpa"
    assert load_model("tiny-random", dtype="auto").dtype == torch.float32


def test_missing_path_is_one_line() -> None:
    with pytest.raises(PreftuneError, match=r"^model path './nope' does not exist$"):
        load_model("./nope")
    with pytest.raises(PreftuneError, match="does not exist"):
        load_tokenizer("/no/such/folder")


def test_unreachable_hub_is_one_quick_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(*args, **kwargs):
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "model_info", offline)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    message = r"^model 'someorg/not-a-model-xyz' not found: not a local folder and the hub cannot be reached$"
    start = time.perf_counter()
    with pytest.raises(PreftuneError, match=message):
        load_model("someorg/not-a-model-xyz")
    with pytest.raises(PreftuneError, match="hub cannot be reached"):
        load_tokenizer("someorg/not-a-model-xyz")
    assert time.perf_counter() - start < 5


def test_offline_mode_needs_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(PreftuneError, match="hub cannot be reached"):
        load_model("someorg/not-a-model-xyz")


def test_tokenizer_without_pad_gets_eos(tiny_path: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(tiny_path)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(tmp_path)
    assert load_tokenizer(tmp_path).pad_token == tokenizer.eos_token


def test_bad_dtype(tiny_path: Path) -> None:
    with pytest.raises(PreftuneError, match="dtype 'int8'"):
        load_model(tiny_path, dtype="int8")


def test_dtype_names_are_exposed_and_a_bad_one_fails_before_loading() -> None:
    assert DTYPES == ("auto", "float32", "bfloat16", "float16")
    with pytest.raises(PreftuneError, match=r"^dtype 'float33' is not one of auto, float32, bfloat16, float16$"):
        load_model("./nope", dtype="float33")  # the dtype is checked before the (missing) model is looked for
