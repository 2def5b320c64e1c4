"""Fixtures for the fast-path tests: the tiny model and real HH-RLHF pairs with its chat template."""

from __future__ import annotations

import pytest

from preftune.data import TokenizedPair, bundled_path, load_preference_data, tokenize_examples
from preftune.modeling import load_tokenizer, tiny_model_path


@pytest.fixture(scope="session")
def tiny_path():
    return tiny_model_path()


@pytest.fixture(scope="session")
def tokenizer(tiny_path):
    return load_tokenizer(tiny_path)


@pytest.fixture(scope="session")
def hh_pairs(tokenizer) -> list[TokenizedPair]:
    """24 bundled HH-RLHF pairs, cut to 160 tokens so that some are truncated."""
    examples, _ = load_preference_data(bundled_path("hh-harmless"))
    pairs, _ = tokenize_examples(examples[:24], tokenizer, max_length=160)
    return pairs
