"""The sampling settings' old names: a config that spells them under online.* (until preftune 0.3)
resolves to the same run as one with the `sampling` section, with one note per old key; both
spellings with different values are refused in one line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from preftune.cli.config import load_config, renamed_note, schema_keys
from preftune.cli.main import main
from preftune.errors import PreftuneError
from preftune.run.config import RENAMED_KEYS, to_dict
from preftune.run.resume import check_resumable
from preftune.run_layout import CONFIG_FILE, DONE_FILE

OLD_VALUES = {
    "online.samples_per_prompt": 3,
    "online.temperature": 0.7,
    "online.top_p": 0.9,
    "online.top_k": 5,
    "online.max_new_tokens": 16,
    "online.backend": "hf",
    "online.sample_dtype": "float32",
    "online.vllm_gpu_memory": 0.4,
}

OLD_YAML = """\
online:
  rounds: 2
  samples_per_prompt: 3
  temperature: 0.7
  top_p: 0.9
  top_k: 5
  max_new_tokens: 16
  backend: hf
  sample_dtype: float32
  vllm_gpu_memory: 0.4
"""

NEW_YAML = """\
online:
  rounds: 2
sampling:
  n: 3
  temperature: 0.7
  top_p: 0.9
  top_k: 5
  max_new_tokens: 16
  backend: hf
  dtype: float32
  vllm_gpu_memory: 0.4
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_table_maps_every_old_key_to_a_schema_key():
    keys = schema_keys()
    assert set(RENAMED_KEYS) == set(OLD_VALUES)
    assert all(new in keys and old not in keys for old, new in RENAMED_KEYS.items())


def test_old_spellings_resolve_to_the_same_run_with_one_note_per_old_key(tmp_path):
    new = load_config(_write(tmp_path / "new.yaml", NEW_YAML), [])
    expected_notes = [renamed_note(old) for old in OLD_VALUES]
    assert renamed_note("online.temperature") == (
        "online.temperature is now sampling.temperature (the old name is read until preftune 0.3)"
    )

    notes: list[str] = []  # the YAML file's nested form
    old = load_config(_write(tmp_path / "old.yaml", OLD_YAML), [], notes=notes)
    assert dataclasses.asdict(old) == dataclasses.asdict(new) and old == new
    assert notes == expected_notes

    notes = []  # key=value overrides
    old = load_config(None, ["online.rounds=2", *(f"{k}={v}" for k, v in OLD_VALUES.items())], notes=notes)
    assert old == load_config(None, ["online.rounds=2", *(f"{RENAMED_KEYS[k]}={v}" for k, v in OLD_VALUES.items())])
    assert old == new and notes == expected_notes

    notes = []  # an old key in the file and again on the command line: one note; the override wins
    config = load_config(tmp_path / "old.yaml", ["online.temperature=0.5", "sampling.top_k=7"], notes=notes)
    assert (config.sampling.temperature, config.sampling.top_k) == (0.5, 7)
    assert notes == expected_notes

    notes = []  # the new names: no note
    assert load_config(tmp_path / "new.yaml", ["sampling.n=5"], notes=notes).sampling.n == 5 and notes == []


def test_old_and_new_spellings_with_different_values_are_refused(tmp_path):
    with pytest.raises(PreftuneError) as caught:
        load_config(None, ["online.temperature=0.7", "sampling.temperature=0.5"])
    message = str(caught.value)
    assert "\n" not in message and "online.temperature=0.7" in message and "sampling.temperature=0.5" in message

    path = _write(tmp_path / "both.yaml", "online: {samples_per_prompt: 3}\nsampling: {n: 2}\n")
    with pytest.raises(PreftuneError, match=r"both\.yaml: online\.samples_per_prompt=3 and sampling\.n=2"):
        load_config(path, [])

    # the same value under both names is one setting, given twice
    assert load_config(None, ["online.top_p=0.9", "sampling.top_p=0.90"]).sampling.top_p == 0.9
    path = _write(tmp_path / "same.yaml", "online: {samples_per_prompt: 3}\nsampling: {n: 3}\n")
    assert load_config(path, []).sampling.n == 3
    # a file and an override are layers: the override overrides, whichever names they use
    assert load_config(path, ["online.samples_per_prompt=6"]).sampling.n == 6


def test_trl_names_point_at_the_sampling_section():
    with pytest.raises(PreftuneError, match=r"'num_generations' \(TRL's name; here sampling\.n "):
        load_config(None, ["num_generations=4"])


def test_the_note_reaches_stderr_once(tmp_path, capsys):
    path = _write(tmp_path / "old.yaml", "online: {rounds: 2, temperature: 0.7}\n")
    assert main(["train", str(path), "online.temperature=0.8", "--print-config"]) == 0
    captured = capsys.readouterr()
    line = "note: online.temperature is now sampling.temperature (the old name is read until preftune 0.3)\n"
    assert captured.err.count(line) == 1 and captured.err.count("note:") == 1
    assert "temperature: 0.8" in captured.out and "samples_per_prompt" not in captured.out


def test_a_run_saved_with_the_old_names_resumes(tmp_path):
    """run_config.json written before the sampling section: --resume reads its old names as the new ones."""
    out = tmp_path / "run"
    out.mkdir()
    (out / DONE_FILE).write_text("{}", encoding="utf-8")
    config = load_config(None, ["online.rounds=2", "sampling.temperature=0.7"])
    saved = to_dict(config)
    sampling = saved.pop("sampling")
    saved["online"].update({old.split(".")[1]: sampling[new.split(".")[1]] for old, new in RENAMED_KEYS.items()})
    (out / CONFIG_FILE).write_text(json.dumps(saved), encoding="utf-8")
    check_resumable(out, ["train"], to_dict(config))
    config.sampling.temperature = 0.5
    with pytest.raises(PreftuneError, match=r"sampling\.temperature \(0\.7 -> 0\.5\)"):
        check_resumable(out, ["train"], to_dict(config))
