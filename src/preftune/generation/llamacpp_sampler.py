"""Sampling through llama.cpp (the ``xllamacpp`` wheel) from a GGUF file of the current policy, written each round.

    >>> sampler = LlamaCppSampler()                       # bf16 GGUF, threads: the free cores
    >>> samples = sampler(policy, tokenizer, prompt_ids, SamplingConfig(n=4, seed=0))

The CPU counterpart of the colocated vLLM engine (:class:`~preftune.generation.vllm_backend.ColocatedVllmSampler`):
each call writes :func:`~preftune.modeling.merged.merged_weights` of the policy (LoRA merged in) as a
GGUF file (:func:`~preftune.modeling.gguf_export.write_gguf`, bfloat16 by default) into a temporary
folder, starts an in-process llama.cpp server on it (``xllamacpp.Server``: a loopback port the
system picks, ``n_parallel`` slots batched in each decoding step, one KV pool shared by the slots),
sends the prompts (one ``POST /completion`` each, ``n`` samples) and stops the server. Writing and
loading the round's file cost 0.3-1 s for SmolLM2-135M in bfloat16.

Not wired into ``sampling.backend``: it is not faster than the bfloat16 copy
(:class:`~preftune.generation.copy_sampler.CopySampler`) on the CPU measured (``benchmarks/samplers.py``,
AMD EPYC Zen 4 with AVX-512 BF16, 2 cores shared with other processes, SmolLM2-135M, 16 rows × 64
tokens, median of 3 interleaved repeats, one thread each): 22.2 s a round against the copy's 11.9 s.

Fidelity to the policy:

* prompts go as token ids and the response ids come back as sampled (``return_tokens``), never
  through text, so nothing is re-tokenised; the text is decoded from those ids, as
  :func:`~preftune.generation.sampling.sample` does;
* the sampler chain is ``temperature → top_k → top_p → draw``, in transformers' order, with every
  other llama.cpp sampler (penalties, DRY, min-p 0.05, XTC, typical-p, top-n-σ) left out of the
  chain; top_k 0 and top_p 1 keep every token, as in :class:`SamplingConfig`;
* a response ends at llama.cpp's end-of-generation tokens, which for the tokenizers written
  here are the ids :func:`~preftune.data.tokenize.end_of_turn_ids` gives (EOS, ``<|im_end|>``,
  ``<|endoftext|>``); a response cut at any other id is refused rather than returned.

Seeds: with ``config.seed``, sample ``j`` of prompt ``i`` is seeded ``seed + i·n + j`` (one request
per prompt, seeded ``seed + i·n``: llama.cpp seeds a request's k-th sample ``seed + k``, so one
request for all prompts would give every prompt the same random numbers); with None the seed is
drawn from torch's global RNG. llama.cpp's draws are not transformers': the same seed gives other
samples than the HF sampler, from the same distribution (to the precision of the file's dtype and
llama.cpp's float16 KV cache).
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch

from preftune.cores import free_cores
from preftune.data.tokenize import end_of_turn_ids
from preftune.errors import PreftuneError
from preftune.generation.sampling import Sample, SamplingConfig
from preftune.modeling.gguf_export import GgufVocab, gguf_unsupported, gguf_vocab, write_gguf
from preftune.modeling.merged import merged_weights

#: The sampler chain, in transformers' order; anything llama.cpp would add by default is left out.
SAMPLERS = ["temperature", "top_k", "top_p"]


def llamacpp_missing(model_config: Any = None, processes: int = 1) -> str | None:
    """Why llama.cpp cannot sample the policy here (no xllamacpp, not a Llama model, several
    processes), or None when it can; ``model_config`` is the HF config (None: not checked)."""
    if importlib.util.find_spec("xllamacpp") is None:
        return "xllamacpp is not installed (pip install 'preftune[serve]')"
    if processes > 1:
        return f"the llama.cpp sampler runs in one training process, not {processes}"
    return None if model_config is None else gguf_unsupported(model_config)


def _base(model: Any) -> Any:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class LlamaCppSampler:
    """A sampler (:func:`~preftune.generation.sampling.sample`'s contract) through llama.cpp over a
    GGUF file of the model it is given, written before each call (see the module docstring).

    Args:
        dtype: the file's weights, ``"bf16"`` (default), ``"f16"`` or ``"f32"``.
        threads: llama.cpp's threads (default: the free cores, :func:`free_cores`:
            llama.cpp's thread pool slows several times over when a thread waits for a busy core).
        directory: where the round's file goes (default: a fresh temporary folder, removed after).
    """

    def __init__(self, dtype: str = "bf16", threads: int | None = None, directory: str | Path | None = None) -> None:
        reason = llamacpp_missing()
        if reason is not None:
            raise PreftuneError(f"llama.cpp cannot sample here: {reason}")
        self.dtype, self.threads, self.directory = dtype, threads, directory
        self.vocab: GgufVocab | None = None

    def __call__(
        self,
        model: Any,
        tokenizer: Any,
        prompts: Sequence[Sequence[int]],
        config: SamplingConfig,
        progress: bool = False,
    ) -> list[Sample]:
        """Write ``model``'s current weights as GGUF, then sample ``config.n`` responses per prompt."""
        for index, prompt in enumerate(prompts):
            if not len(prompt):
                raise PreftuneError(f"prompt {index} is empty; sampling needs at least one prompt token")
        stops = end_of_turn_ids(tokenizer)
        if not stops:
            raise PreftuneError("the tokenizer has no EOS or end-of-turn token, so a response could never finish")
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**31 - 1, ()).item())
        slots = max(min(config.batch_size, len(prompts) * config.n), config.n)  # llama.cpp refuses n > slots
        with tempfile.TemporaryDirectory(prefix="preftune-gguf-", dir=self.directory) as folder:
            path = self.write(model, tokenizer, Path(folder) / "policy.gguf")
            server = self.start(path, slots, width=max(len(p) for p in prompts) + config.max_new_tokens + 1)
            try:
                bodies = [request_body(p, config, seed + i * config.n) for i, p in enumerate(prompts)]
                with ThreadPoolExecutor(max(1, slots // config.n)) as pool:  # enough requests to fill the slots
                    results = list(pool.map(partial(_post, server.listening_address), bodies))
            finally:
                del server  # stops llama.cpp's loop and frees the model before the file goes
        return [
            sample
            for index, (prompt, answer) in enumerate(zip(prompts, results, strict=True))
            for sample in samples_from_results(answer, index, prompt, config.n, stops, tokenizer)
        ]

    def write(self, model: Any, tokenizer: Any, path: Path) -> Path:
        """The GGUF file of ``model``'s current weights at ``path`` (the tokenizer block built once)."""
        config = _base(model).config
        if self.vocab is None:
            self.vocab = gguf_vocab(tokenizer, config.vocab_size)
        return write_gguf(path, config, merged_weights(model), self.vocab, self.dtype)

    def start(self, path: Path, slots: int, width: int) -> Any:
        """An in-process llama.cpp server on ``path``: ``slots`` parallel sequences of up to ``width``
        tokens in one KV pool, on a loopback port the system picks, quiet but for errors."""
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = slots
        params.kv_unified = True
        params.n_ctx = slots * width
        params.n_batch = params.n_ubatch = 512
        threads = self.threads or free_cores()
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
        params.port = 0  # the default host is the loopback address
        params.warmup = False
        params.verbosity = 0
        try:
            return xllamacpp.Server(params)
        except RuntimeError as err:
            raise PreftuneError(f"llama.cpp could not load the policy's GGUF file: {err}") from err


def request_body(prompt: Sequence[int], config: SamplingConfig, seed: int) -> dict[str, Any]:
    """The ``POST /completion`` body of one prompt: its ids, ``n`` samples (seeded ``seed``,
    ``seed + 1``, ... by llama.cpp), only :data:`SAMPLERS` in the chain."""
    return {
        "prompt": [int(t) for t in prompt],
        "n": config.n,
        "n_predict": config.max_new_tokens,
        "temperature": config.temperature,
        "top_k": config.top_k,
        "top_p": config.top_p,
        "min_p": 0.0,
        "samplers": SAMPLERS,
        "seed": seed,
        "return_tokens": True,
        "ignore_eos": False,
        "stream": False,
    }


def _post(address: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The server's answer to ``POST /completion`` (a list: one result per prompt and sample)."""
    request = urllib.request.Request(
        f"{address}/completion", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=None) as response:
            results = json.loads(response.read())
    except urllib.error.HTTPError as err:
        raise PreftuneError(f"llama.cpp refused the sampling request: {err.read().decode(errors='replace')}") from err
    return results if isinstance(results, list) else [results]


def samples_from_results(
    results: Sequence[dict[str, Any]], prompt_index: int, prompt: Sequence[int], n: int, stops: set[int], tokenizer: Any
) -> list[Sample]:
    """The ``n`` :class:`Sample`s of one prompt from llama.cpp's results (each with ``index``,
    ``tokens``, ``stop_type``): a response stopped at end-of-generation (``"eos"``) ends with its
    stop id; one cut at the length limit (``"limit"``) is ``finished=False``.

    Raises:
        PreftuneError: results missing, or a response ended for another reason, or at an id that is
            not one of ``stops``, or went on after one (llama.cpp's end-of-generation set would then
            differ from preftune's end-of-turn ids).
    """
    by_index = {int(r["index"]): r for r in results}
    if sorted(by_index) != list(range(n)):
        raise PreftuneError(f"llama.cpp returned {len(results)} results for prompt {prompt_index}, not {n}")
    out = []
    for index in range(n):
        ids, reason = [int(t) for t in by_index[index]["tokens"]], by_index[index].get("stop_type")
        stopped = [i for i, token in enumerate(ids) if token in stops]
        if stopped and stopped[0] < len(ids) - 1:
            raise PreftuneError(f"llama.cpp went on after end-of-turn id {ids[stopped[0]]} (prompt {prompt_index})")
        if reason not in ("eos", "limit") or (reason == "eos") != bool(stopped):
            last = ids[-1] if ids else None
            raise PreftuneError(f"llama.cpp ended a sample of prompt {prompt_index} ({reason!r}, last id {last})")
        text = tokenizer.decode(ids, skip_special_tokens=True).strip()
        out.append(Sample(prompt_index, [int(t) for t in prompt], ids, text, bool(stopped)))
    return out
