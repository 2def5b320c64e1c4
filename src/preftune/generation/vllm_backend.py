"""Sampling through vLLM (installed, on a CUDA GPU), with :func:`~preftune.generation.sampling.sample`'s contract.

    >>> sampler = VllmSampler("smollm2-135m-instruct", seed=0)     # one vllm.LLM, built once
    >>> samples = sampler.sample([pair.prompt_ids for pair in pairs], SamplingConfig(n=4, seed=0))

Prompts go to ``vllm.LLM.generate`` as token ids (``{"prompt_token_ids": ids}``), never as text,
with ``vllm.SamplingParams(n, temperature, top_p, top_k, max_tokens, seed, stop_token_ids)``; the
stop ids are preftune's end-of-turn ids (:func:`preftune.data.tokenize.end_of_turn_ids`), as for the
HF sampler. vLLM's top_k "off" is -1 (older versions refuse 0). Greedy (temperature 0) with n > 1
sends each prompt n times with n = 1 (older vLLM refuses greedy with n > 1).

:func:`samples_from_outputs` turns vLLM's ``RequestOutput``s into :class:`Sample`s without importing
vLLM: prompt i's n responses in a row, the response ids as sampled, up to and including the stop
token (vLLM keeps a stop token id in ``CompletionOutput.token_ids`` and drops it only from the text;
when one is missing it is appended from ``stop_reason``), ``finished`` when ``finish_reason`` is
``"stop"``. Unlike the HF sampler, extras in the model's ``generation_config`` (a repetition penalty,
say) do not apply when explicit ``SamplingParams`` are passed, and seeds give other samples than HF's.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from preftune.data.tokenize import end_of_turn_ids
from preftune.errors import PreftuneError
from preftune.generation.sampling import Sample, SamplingConfig
from preftune.modeling.merged import merged_weights

BACKENDS = ("auto", "hf", "vllm")


def vllm_missing() -> str | None:
    """Why vLLM cannot sample here (not installed, no CUDA GPU), or None when it can."""
    if importlib.util.find_spec("vllm") is None:
        return "vllm is not installed"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU is available"
    return None


def vllm_available() -> bool:
    """Whether ``vllm`` is installed and a CUDA GPU is available."""
    return vllm_missing() is None


def colocate_missing(model: str, processes: int = 1) -> str | None:
    """Why vLLM cannot sample in the training loop here (:class:`ColocatedVllmSampler`), or None when it can.

    Beyond :func:`vllm_missing`: the engine loads ``model``'s checkpoint (not an adapter alone), and
    it runs in one training process (each process would build an engine on the same GPU).
    """
    if _adapter_only(model):
        return f"vLLM needs a full checkpoint and {model} holds only an adapter"
    if processes > 1:
        return f"the colocated vLLM engine runs in one training process, not {processes}"
    return vllm_missing()


def _adapter_only(model: str) -> bool:
    """A local folder holding a PEFT adapter without a merged checkpoint (vLLM cannot load it alone)."""
    path = Path(model).expanduser()
    return (path / "adapter_config.json").is_file() and not (path / "config.json").is_file()


def resolve_backend(requested: str, model: str, device: str | None = None) -> str:
    """``"hf"`` or ``"vllm"`` for ``sampling.backend`` (auto: vLLM when it can sample ``model`` on ``device``).

    Raises:
        PreftuneError: ``vllm`` was asked for and cannot run here (checked before any model loads).
    """
    on_gpu = device is None or str(device).startswith("cuda")
    if requested == "hf":
        return "hf"
    if requested == "auto":
        return "vllm" if on_gpu and not _adapter_only(model) and vllm_available() else "hf"
    if requested != "vllm":
        raise PreftuneError(f"sampling.backend must be one of {', '.join(BACKENDS)}, not {requested!r}")
    if not on_gpu:
        raise PreftuneError(
            f"sampling.backend=vllm samples on a CUDA GPU, not model.device={device}; use sampling.backend=hf"
        )
    if _adapter_only(model):
        raise PreftuneError(
            f"sampling.backend=vllm needs a merged checkpoint, and {model} holds only an adapter; "
            "use sampling.backend=hf"
        )
    reason = vllm_missing()
    if reason is not None:
        raise PreftuneError(f"sampling.backend=vllm: {reason}; use sampling.backend=hf (or auto)")
    return "vllm"


def sampling_kwargs(config: SamplingConfig, eot_ids: Sequence[int]) -> dict[str, Any]:
    """``vllm.SamplingParams`` keywords for ``config`` (n = 1 per request when greedy; see the module docstring)."""
    kwargs: dict[str, Any] = {
        "n": 1 if config.greedy else config.n,
        "temperature": config.temperature,
        "max_tokens": config.max_new_tokens,
        "seed": config.seed,
        "stop_token_ids": sorted(int(t) for t in eot_ids),
    }
    if not config.greedy:
        kwargs.update(top_p=config.top_p, top_k=config.top_k if config.top_k > 0 else -1)
    return kwargs


def samples_from_outputs(
    outputs: Sequence[Any], prompts: Sequence[Sequence[int]], n: int, eot_ids: Sequence[int] | set[int]
) -> list[Sample]:
    """:class:`Sample`s from vLLM's ``RequestOutput``s, one per prompt in order, each with ``n`` completions.

    A completion is read by its ``index``, ``token_ids``, ``text``, ``finish_reason`` and
    ``stop_reason`` (duck-typed: no vLLM import). Returns ``len(prompts) * n`` samples,
    prompt-major, as :func:`~preftune.generation.sampling.sample` returns them.

    Raises:
        PreftuneError: the outputs do not match the prompts, a completion ended for a reason other
            than a stop or the length limit, or a stop left no way to know its token.
    """
    stops = {int(t) for t in eot_ids}
    if len(outputs) != len(prompts):
        raise PreftuneError(f"vLLM returned {len(outputs)} outputs for {len(prompts)} prompts")
    out: list[Sample] = []
    for index, (request, prompt) in enumerate(zip(outputs, prompts, strict=True)):
        completions = sorted(request.outputs, key=lambda c: getattr(c, "index", 0))
        if len(completions) != n:
            raise PreftuneError(f"vLLM returned {len(completions)} completions for prompt {index}, not {n}")
        for completion in completions:
            ids = [int(t) for t in completion.token_ids]
            reason = completion.finish_reason
            if reason not in ("stop", "length"):
                raise PreftuneError(f"vLLM ended a completion of prompt {index} with finish_reason {reason!r}")
            finished = reason == "stop"
            stop_reason = getattr(completion, "stop_reason", None)
            stop_id = stop_reason if isinstance(stop_reason, int) else None
            if finished and not (ids and (ids[-1] in stops or ids[-1] == stop_id)):
                if stop_id is None and len(stops) == 1:
                    stop_id = next(iter(stops))
                if stop_id is None:
                    raise PreftuneError(f"vLLM stopped a completion of prompt {index} without reporting its stop token")
                ids.append(stop_id)
            out.append(Sample(index, [int(t) for t in prompt], ids, completion.text.strip(), finished))
    return out


class VllmSampler:
    """One ``vllm.LLM`` for a model, built once; :meth:`sample` keeps :func:`.sampling.sample`'s contract.

    Args:
        model: a built-in name, a local checkpoint folder or a hub name (as ``load_model`` takes).
        tokenizer: the model's tokenizer, for the end-of-turn ids (default: ``load_tokenizer(model)``).
        seed: the engine's seed (each call's ``config.seed`` seeds its requests).
        dtype: the weights' dtype in vLLM (``"auto"`` keeps the checkpoint's).
        gpu_memory_utilization: the share of GPU memory vLLM may take.
        **engine_kwargs: anything else for ``vllm.LLM`` (``max_model_len``, ``enforce_eager``, ...).
    """

    def __init__(
        self,
        model: str,
        *,
        tokenizer: Any = None,
        seed: int = 0,
        dtype: str = "auto",
        gpu_memory_utilization: float = 0.9,
        **engine_kwargs: Any,
    ) -> None:
        reason = vllm_missing()
        if reason is not None:
            raise PreftuneError(f"vLLM cannot sample here: {reason}")
        from preftune.modeling.loading import load_tokenizer, resolve_model

        if _adapter_only(model):
            raise PreftuneError(f"vLLM needs a merged checkpoint, and {model} holds only an adapter")
        self.eot_ids = sorted(end_of_turn_ids(tokenizer if tokenizer is not None else load_tokenizer(model)))
        if not self.eot_ids:
            raise PreftuneError("the tokenizer has no EOS or end-of-turn token, so a response could never finish")
        import vllm

        self._vllm = vllm
        self.llm = vllm.LLM(
            model=resolve_model(model),
            seed=seed,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            **engine_kwargs,
        )

    def sample(self, prompts: Sequence[Sequence[int]], config: SamplingConfig) -> list[Sample]:
        """``config.n`` responses to each tokenised prompt, prompt-major (``config.batch_size`` is vLLM's to choose)."""
        for index, prompt in enumerate(prompts):
            if not len(prompt):
                raise PreftuneError(f"prompt {index} is empty; sampling needs at least one prompt token")
        repeat = config.n if config.greedy else 1
        sent = [[int(t) for t in p] for p in prompts for _ in range(repeat)]
        params = self._vllm.SamplingParams(**sampling_kwargs(config, self.eot_ids))
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in sent], sampling_params=params, use_tqdm=False)
        samples = samples_from_outputs(outputs, sent, config.n // repeat, self.eot_ids)
        return [replace(s, prompt_index=s.prompt_index // repeat) for s in samples]


def sample_vllm(
    model: VllmSampler, tokenizer: Any, prompts: Sequence[Sequence[int]], config: SamplingConfig, progress: bool = False
) -> list[Sample]:
    """:func:`.sampling.sample`'s signature over a :class:`VllmSampler` (which holds its own stop ids)."""
    return model.sample(prompts, config)


def _load_in_worker(worker: Any, weights: list[tuple[str, Any]]) -> None:
    """Run inside a vLLM worker by ``collective_rpc``: load ``weights`` into its model."""
    worker.model_runner.model.load_weights(weights=weights)


def _engine_model(llm: Any) -> Any:
    """The ``nn.Module`` a colocated (in-process) vLLM engine runs, or None where it lives in another process."""
    executor = getattr(getattr(llm, "llm_engine", None), "model_executor", None)
    worker = getattr(executor, "driver_worker", None)
    for holder in (worker, getattr(worker, "worker", None)):  # vLLM 0.6-0.7 (V0); then V1 in process, 0.8+
        model = getattr(getattr(holder, "model_runner", None), "model", None)
        if model is not None and hasattr(model, "load_weights"):
            return model
    return None


def load_weights_into_vllm(llm: Any, weights: Iterable[tuple[str, Any]]) -> None:
    """Hand ``(name, tensor)`` pairs (base-model names) to a ``vllm.LLM``'s model, as TRL's colocate mode does.

    Tries the in-process model first (``llm_engine.model_executor.driver_worker[.worker].model_runner
    .model.load_weights``: vLLM's V0 engine, and V1 with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``), then
    ``llm.collective_rpc`` (V1 with the engine in another process: the tensors are sent to it).
    vLLM's ``load_weights`` maps HF names onto its fused layers (q/k/v into ``qkv_proj``, ...).
    Afterwards the prefix cache is reset: its KV blocks were computed with the old weights.

    Raises:
        PreftuneError: no known path fits this vLLM (the message names its version).
    """
    model = _engine_model(llm)
    if model is not None:
        model.load_weights(weights=iter(weights))
    elif callable(getattr(llm, "collective_rpc", None)):
        llm.collective_rpc(_load_in_worker, args=([(name, tensor.cpu()) for name, tensor in weights],))
    else:
        raise PreftuneError(
            f"cannot load the trainer's weights into vLLM {_vllm_version()}: neither "
            "llm_engine.model_executor.driver_worker[.worker].model_runner.model nor "
            "LLM.collective_rpc is there; use sampling.backend=hf"
        )
    reset = getattr(llm, "reset_prefix_cache", None)
    if callable(reset):
        reset()


def _vllm_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vllm")
    except PackageNotFoundError:
        return "(not installed)"


class ColocatedVllmSampler:
    """vLLM in the training process, sampling each round from the trainer's *current* weights (TRL's colocate mode).

    An :class:`~preftune.training.OnPolicySource` sampler: each call first loads
    :func:`merged_weights` of the model it is given into the engine (built once, from the base
    checkpoint ``model``), then samples with :meth:`VllmSampler.sample`. The engine takes
    ``gpu_memory_utilization`` of the GPU beside the trainer, so that share must leave the training
    room. vLLM's V1 engine is kept in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set)
    so that the weights are copied on the GPU rather than sent to another process.

    Args:
        model: the base checkpoint the trainer started from (as ``load_model`` takes it).
        tokenizer: the policy's tokenizer (end-of-turn ids).
        seed: the engine's seed.
        gpu_memory_utilization: the share of GPU memory vLLM may take.
        **engine_kwargs: anything else for ``vllm.LLM``.
    """

    def __init__(
        self, model: str, tokenizer: Any, *, seed: int = 0, gpu_memory_utilization: float = 0.3, **engine_kwargs: Any
    ) -> None:
        import os

        reason = vllm_missing()
        if reason is not None:  # refused before the environment is touched
            raise PreftuneError(f"vLLM cannot sample here: {reason}")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # before vllm.LLM reads it
        self.engine = VllmSampler(
            model, tokenizer=tokenizer, seed=seed, gpu_memory_utilization=gpu_memory_utilization, **engine_kwargs
        )

    def __call__(
        self, model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], config: SamplingConfig
    ) -> list[Sample]:
        """Load ``model``'s current weights into the engine, then sample ``config.n`` responses per prompt."""
        load_weights_into_vllm(self.engine.llm, merged_weights(model))
        return self.engine.sample(prompts, config)
