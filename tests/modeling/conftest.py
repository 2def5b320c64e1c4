"""Session fixtures: the tiny random model (built once in the preftune cache; the first build on a
fresh machine converts the embedded SmolLM2 GGUF for its tokenizer, about a minute)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preftune.modeling import ensure_embedded_model, load_model, load_tokenizer, tiny_model_path


@pytest.fixture(scope="session")
def embedded_path() -> Path:
    return ensure_embedded_model()


@pytest.fixture(scope="session")
def tiny_path(embedded_path: Path) -> Path:
    return tiny_model_path()


@pytest.fixture(scope="session")
def tokenizer(tiny_path: Path):
    return load_tokenizer(tiny_path)


@pytest.fixture
def tiny(tiny_path: Path) -> torch.nn.Module:
    """A fresh float32 tiny model (tests may change it)."""
    return load_model(tiny_path)


@pytest.fixture
def tiny64(tiny_path: Path) -> torch.nn.Module:
    """The tiny model in float64, for comparisons to 1e-5 and tighter."""
    return load_model(tiny_path).double()
