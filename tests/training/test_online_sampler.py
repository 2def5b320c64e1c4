"""The on-policy loop's sampler seam, and what the colocated vLLM sampler does without vLLM.

vLLM cannot run here (no GPU, not installed): the merged weights it would be handed are checked on
a real tiny PEFT model on the CPU, and the weight-loading dispatch on small stand-ins shaped like
the ``vllm.LLM`` attribute paths it reads (``llm_engine.model_executor.driver_worker[.worker]
.model_runner.model``, ``collective_rpc``, ``reset_prefix_cache``).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from preftune.errors import PreftuneError
from preftune.generation.sampling import SamplingConfig, sample
from preftune.generation.vllm_backend import load_weights_into_vllm
from preftune.modeling import apply_lora, load_model
from preftune.modeling.merged import merged_weights
from preftune.training.online import OnlineSettings, OnPolicySource, train_rounds
from tests.training.test_online import make_loop


def test_merged_weights_give_the_peft_models_logits_and_leave_it_untouched():
    torch.manual_seed(0)
    peft_model = apply_lora(load_model("tiny-random", dtype="float32"), rank=4, alpha=8, target_modules="all-linear")
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.1)  # B starts at zero: make every adapter change its layer
    before = {name: t.clone() for name, t in peft_model.state_dict().items()}
    merged = dict(merged_weights(peft_model))
    assert not any("lora_" in name or "base_layer" in name or name.startswith("base_model") for name in merged)
    fresh = load_model("tiny-random", dtype="float32")
    fresh.load_state_dict(merged, strict=True)
    ids = torch.tensor([[1, 5, 9, 14, 3, 7, 2, 11]])
    with torch.no_grad():
        want, got = peft_model(input_ids=ids).logits, fresh(input_ids=ids).logits
    assert not torch.allclose(want, load_model("tiny-random", dtype="float32")(input_ids=ids).logits, atol=1e-3)
    # W + s·BA against W·x + s·B(A·x): float32 rounding of the logits' size (~8; 9e-6 apart on an AMD EPYC Zen 4)
    torch.testing.assert_close(got, want, atol=1e-5 * float(want.abs().max()), rtol=0)
    after = peft_model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)  # bit-unchanged


def test_a_plain_model_gives_its_state_dict():
    model = load_model("tiny-random", dtype="float32")
    merged = dict(merged_weights(model))
    assert merged.keys() == model.state_dict().keys()
    assert all(torch.equal(merged[k], v) for k, v in model.state_dict().items())


class StandInModel:
    """Records what ``load_weights`` was handed (vLLM's model classes take ``weights=`` an iterable)."""

    def __init__(self) -> None:
        self.loaded: list[tuple[str, torch.Tensor]] = []

    def load_weights(self, weights):
        self.loaded.extend(weights)


class StandInLLM:
    """Only what the dispatch reads, shaped by ``layout``: ``v0`` (driver_worker.model_runner),
    ``v1`` (driver_worker.worker.model_runner), ``rpc`` (collective_rpc only) or ``none``."""

    def __init__(self, layout: str) -> None:
        self.model, self.resets, self.rpc_calls = StandInModel(), 0, 0
        runner = SimpleNamespace(model=self.model)
        if layout == "v0":
            self.llm_engine = SimpleNamespace(
                model_executor=SimpleNamespace(driver_worker=SimpleNamespace(model_runner=runner))
            )
        elif layout == "v1":
            self.llm_engine = SimpleNamespace(
                model_executor=SimpleNamespace(
                    driver_worker=SimpleNamespace(worker=SimpleNamespace(model_runner=runner))
                )
            )
        else:
            self.llm_engine = SimpleNamespace()
        if layout == "rpc":
            self.collective_rpc = self._rpc
        if layout != "none":
            self.reset_prefix_cache = self._reset

    def _rpc(self, method, args=()):  # vLLM calls a callable as method(worker, *args) in each worker
        self.rpc_calls += 1
        return [method(SimpleNamespace(model_runner=SimpleNamespace(model=self.model)), *args)]

    def _reset(self) -> None:
        self.resets += 1


@pytest.mark.parametrize("layout", ["v0", "v1", "rpc"])
def test_weights_reach_the_engine_model_on_each_known_path_and_the_prefix_cache_is_reset(layout):
    llm = StandInLLM(layout)
    weights = [("model.embed_tokens.weight", torch.ones(2, 2)), ("lm_head.weight", torch.zeros(2, 2))]
    load_weights_into_vllm(llm, iter(weights))
    assert [name for name, _ in llm.model.loaded] == [name for name, _ in weights]
    assert llm.resets == 1 and llm.rpc_calls == (1 if layout == "rpc" else 0)


def test_no_known_path_is_refused_naming_the_vllm_version():
    with pytest.raises(PreftuneError, match=r"cannot load the trainer's weights into vLLM .*sampling.backend=hf"):
        load_weights_into_vllm(StandInLLM("none"), iter([]))


def test_the_loop_samples_through_the_sampler_it_is_given():
    """A stand-in sampler returning the HF sampler's samples: called once per round with the trainer's
    model and the round's prompts, and the rounds go as with the default sampler (the HF one)."""
    settings = OnlineSettings(rounds=2, prompts_per_round=4, samples_per_prompt=3, batch_size=4)
    calls = []

    def stand_in(model, tokenizer, prompt_ids, config):
        calls.append((model, len(prompt_ids), config.n, config.seed))
        return sample(model, tokenizer, prompt_ids, config)

    default = train_rounds(make_loop("reinforce", settings)[0])[1]
    built, _ = make_loop("reinforce", settings)  # the same trainer and data, handed to a loop with the seam
    loop = OnPolicySource(
        built.trainer,
        built.tokenizer,
        built.prompts,
        built.prompt_ids,
        built.labeller,
        settings,
        built.sampling,
        built.batcher,
        sampler=stand_in,
    )
    history = train_rounds(loop)[1]
    assert [(m is loop.trainer.model, p, n) for m, p, n, _ in calls] == [(True, 4, 3)] * 2
    assert len({seed for *_, seed in calls}) == 2  # a seed per round
    same = ("samples", "reward_mean", "mean_length", "items", "steps", "loss")
    assert [[getattr(h, k) for k in same] for h in history] == [[getattr(h, k) for k in same] for h in default]


def test_the_colocated_sampler_loads_the_current_weights_then_samples():
    """``ColocatedVllmSampler`` without its engine (no vLLM here): a stand-in engine records the order."""
    from preftune.generation.vllm_backend import ColocatedVllmSampler

    events, llm = [], StandInLLM("v1")
    llm.reset_prefix_cache = lambda: events.append("reset")
    sampler = object.__new__(ColocatedVllmSampler)  # skip __init__: it builds a vllm.LLM
    sampler.engine = SimpleNamespace(llm=llm, sample=lambda prompts, config: events.append(("sample", prompts)) or [])
    model = apply_lora(load_model("tiny-random", dtype="float32"), rank=4)
    assert sampler(model, None, [[1, 2]], SamplingConfig(n=2)) == []
    assert events == ["reset", ("sample", [[1, 2]])]
    assert [name for name, _ in llm.model.loaded] == list(load_model("tiny-random").state_dict())


def test_online_backend_choice(monkeypatch):
    """hf, or a device that is not CUDA: the HF sampler (None); auto on CUDA where vLLM could run: the
    colocated sampler with sampling.vllm_gpu_memory; auto where it cannot: the HF sampler."""
    from preftune.generation import vllm_backend
    from preftune.run.config import RunConfig
    from preftune.run.online import online_sampler

    built = []
    monkeypatch.setattr(vllm_backend, "ColocatedVllmSampler", lambda *a, **k: built.append((a, k)) or "vllm")
    config = RunConfig()
    config.model.name, config.sampling.vllm_gpu_memory = "tiny-random", 0.25
    config.sampling.dtype = "float32"  # not vLLM: the policy itself (a bf16 copy: test_copy_sampler.py)

    def accelerator(kind, processes=1):
        return SimpleNamespace(device=torch.device(kind), num_processes=processes)

    def choose(backend, kind, processes=1):
        config.sampling.backend = backend
        return online_sampler(config, "tok", accelerator(kind, processes), lambda *a, **k: None)

    assert choose("auto", "cuda") is None  # vllm is not installed here
    monkeypatch.setattr(vllm_backend, "vllm_missing", lambda: None)
    assert choose("hf", "cuda") is None and choose("auto", "cpu") is None and choose("auto", "cuda", 2) is None
    assert choose("auto", "cuda") == "vllm" and choose("vllm", "cuda") == "vllm"
    assert built[0] == (("tiny-random", "tok"), {"seed": config.optim.seed, "gpu_memory_utilization": 0.25})


def test_online_backend_vllm_is_refused_in_one_line_before_any_model(tmp_path, monkeypatch, capsys):
    import preftune.run.train
    from preftune.cli.main import main

    def no_loading(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(preftune.run.train, "load_model", no_loading)
    argv = [
        "train",
        "model.name=tiny-random",
        "data.train=bundled:hh-harmless",
        "data.train_size=8",
        "online.rounds=1",
        "sampling.backend=vllm",
        f"output_dir={tmp_path / 'r'}",
        "trackers=[]",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert "sampling.backend=vllm" in err and "vllm is not installed" in err and "sampling.backend=hf" in err
    assert main([*argv[:-3], "sampling.backend=sglang", *argv[-2:]]) == 2
    assert "sampling.backend must be one of auto, hf, vllm" in capsys.readouterr().err
