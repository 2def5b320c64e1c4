"""Settings for the whole suite.

One intra-op thread per test process: ``make test`` runs two pytest workers (pytest-xdist) on a
2-core machine, and the tiny models' matrices are too small to gain from more threads; two
threads per worker would wait on each other (on a busy machine every step slows tenfold).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import preftune.modeling


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading a model or tokenizer fails the test: for input refused before any model work."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(preftune.modeling, "load_model", refuse)
    monkeypatch.setattr(preftune.modeling, "load_tokenizer", refuse)
