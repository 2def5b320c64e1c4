"""The vLLM backend without vLLM: output conversion, backend choice, and the refusal where it cannot run.

vLLM cannot run here (no GPU, not installed), so its outputs are small dataclasses shaped like its
documented ``RequestOutput`` (``outputs``) and ``CompletionOutput`` (``index``, ``text``,
``token_ids``, ``finish_reason``, ``stop_reason``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import preftune.modeling
from preftune.cli.main import main
from preftune.errors import PreftuneError
from preftune.generation import vllm_backend
from preftune.generation.command import Settings, open_output
from preftune.generation.sampling import SamplingConfig
from preftune.generation.vllm_backend import (
    VllmSampler,
    resolve_backend,
    samples_from_outputs,
    sampling_kwargs,
    vllm_available,
)

EOT = {2, 7}  # <|im_end|>-like and EOS-like ids


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


def test_conversion_order_ids_and_flags() -> None:
    prompts = [[10, 11], [12]]
    outputs = [
        RequestOutput(
            prompts[0],
            [  # completions out of order: read by index
                CompletionOutput(1, " b ", [5, 6, 6], "length"),
                CompletionOutput(0, "a", [4, 2], "stop", 2),  # stop token kept in token_ids
            ],
        ),
        RequestOutput(
            prompts[1],
            [
                CompletionOutput(0, "c", [8], "stop", 7),  # stop token dropped: appended from stop_reason
                CompletionOutput(1, "", [7], "stop", None),  # EOS at once (no stop_reason), kept
            ],
        ),
    ]
    samples = samples_from_outputs(outputs, prompts, 2, EOT)
    assert [s.prompt_index for s in samples] == [0, 0, 1, 1]
    assert [s.prompt_ids for s in samples] == [[10, 11], [10, 11], [12], [12]]
    assert [s.response_ids for s in samples] == [[4, 2], [5, 6, 6], [8, 7], [7]]
    assert [s.finished for s in samples] == [True, False, True, True]
    assert [s.text for s in samples] == ["a", "b", "c", ""]


def test_conversion_refusals() -> None:
    with pytest.raises(PreftuneError, match="2 prompts"):
        samples_from_outputs([RequestOutput([1], [CompletionOutput(0, "a", [4], "length")])], [[1], [2]], 1, EOT)
    with pytest.raises(PreftuneError, match="not 2"):
        samples_from_outputs([RequestOutput([1], [CompletionOutput(0, "a", [4], "length")])], [[1]], 2, EOT)
    with pytest.raises(PreftuneError, match="abort"):
        samples_from_outputs([RequestOutput([1], [CompletionOutput(0, "a", [4], "abort")])], [[1]], 1, EOT)
    with pytest.raises(PreftuneError, match="stop token"):  # which of two stop ids ended it is unknown
        samples_from_outputs([RequestOutput([1], [CompletionOutput(0, "a", [4], "stop")])], [[1]], 1, EOT)
    one = samples_from_outputs([RequestOutput([1], [CompletionOutput(0, "a", [4], "stop")])], [[1]], 1, {2})
    assert one[0].response_ids == [4, 2]


def test_sampling_kwargs() -> None:
    sampled = sampling_kwargs(SamplingConfig(n=3, temperature=0.7, top_p=0.9, max_new_tokens=5, seed=4), EOT)
    assert sampled == {
        "n": 3,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": -1,
        "max_tokens": 5,
        "seed": 4,
        "stop_token_ids": [2, 7],
    }
    assert sampling_kwargs(SamplingConfig(top_k=20), EOT)["top_k"] == 20
    greedy = sampling_kwargs(SamplingConfig(n=3, temperature=0), EOT)
    assert greedy["n"] == 1 and "top_k" not in greedy


def test_backend_choice_here(tmp_path: Path) -> None:
    assert not vllm_available()
    assert resolve_backend("auto", "tiny-random") == "hf"
    assert resolve_backend("hf", "tiny-random", "cpu") == "hf"
    for device in (None, "cpu"):
        with pytest.raises(PreftuneError, match=r"sampling\.backend=vllm"):
            resolve_backend("vllm", "tiny-random", device)
    with pytest.raises(PreftuneError, match="vLLM cannot sample here"):
        VllmSampler("tiny-random")


def test_backend_choice_with_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(vllm_backend, "vllm_missing", lambda: None)
    assert resolve_backend("auto", "tiny-random") == "vllm"
    assert resolve_backend("auto", "tiny-random", "cpu") == "hf"
    (tmp_path / "adapter_config.json").write_text("{}")
    assert resolve_backend("auto", str(tmp_path)) == "hf"
    with pytest.raises(PreftuneError, match="adapter"):
        resolve_backend("vllm", str(tmp_path))


def test_resume_refuses_another_backend(tmp_path: Path) -> None:
    out, config = tmp_path / "gen.jsonl", SamplingConfig(n=2, seed=0)
    open_output(out, Settings.of("tiny-random", config))
    out.write_text(json.dumps({"prompt": "Hi", "completions": ["a", "b"]}) + "\n")
    meta = out.with_name(out.name + ".meta.json")
    old = json.loads(meta.read_text())
    assert old["backend"] == "hf"
    del old["backend"]  # a meta file written before backends: read as hf
    meta.write_text(json.dumps(old))
    assert len(open_output(out, Settings.of("tiny-random", config, "hf"))) == 1
    with pytest.raises(PreftuneError, match="backend 'hf' -> 'vllm'"):
        open_output(out, Settings.of("tiny-random", config, "vllm"))


def test_cli_vllm_refused_before_any_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(preftune.modeling, "load_model", no_loading)
    monkeypatch.setattr(preftune.modeling, "load_tokenizer", no_loading)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi"}) + "\n")
    out = tmp_path / "gen.jsonl"
    code = main(["generate", f"prompts={prompts}", "model.name=tiny-random", f"out={out}", "sampling.backend=vllm"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("error:") and "sampling.backend=vllm" in err[0]
    assert not out.exists()


def test_colocated_sampling_needs_vllm_a_full_checkpoint_and_one_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reason = vllm_backend.vllm_missing()
    assert reason is not None and vllm_backend.colocate_missing("tiny-random") == reason
    with pytest.raises(PreftuneError, match="vLLM cannot sample here"):
        vllm_backend.ColocatedVllmSampler("tiny-random", None)
    monkeypatch.setattr(vllm_backend, "vllm_missing", lambda: None)
    assert vllm_backend.colocate_missing("tiny-random") is None
    assert "one training process, not 2" in str(vllm_backend.colocate_missing("tiny-random", processes=2))
    (tmp_path / "adapter_config.json").write_text("{}")
    assert "only an adapter" in str(vllm_backend.colocate_missing(str(tmp_path)))
