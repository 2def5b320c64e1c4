"""Session fixtures: the data files, and two runs trained once and read by many tests (a LoRA run
and a full fine-tuning run, each uninterrupted: the references the resumed runs must equal)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.training.common import DataFiles, Run, full_overrides, lora_overrides, make_data_files, train


@pytest.fixture(scope="session")
def data_files(tmp_path_factory: pytest.TempPathFactory) -> DataFiles:
    return make_data_files(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def lora_run(data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("lora") / "run"
    overrides = lora_overrides(data_files, out)
    return Run(out, overrides, train(overrides))


@pytest.fixture(scope="session")
def full_run(data_files: DataFiles, tmp_path_factory: pytest.TempPathFactory) -> Run:
    out = tmp_path_factory.mktemp("full") / "run"
    overrides = full_overrides(data_files, out)
    return Run(out, overrides, train(overrides))


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "run"
