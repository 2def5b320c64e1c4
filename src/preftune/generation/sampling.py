"""Sampling N responses per prompt from a policy, in left-padded batches, as token ids and text.

    >>> config = SamplingConfig(n=4, temperature=0.7, top_p=0.9, max_new_tokens=256, seed=0)
    >>> samples = sample(model, tokenizer, [pair.prompt_ids for pair in pairs], config)
    >>> samples[0].prompt_ids + samples[0].response_ids  # a row as preftune tokenises it for training

Each prompt is repeated ``n`` times; the sequences go through ``model.generate`` (KV cache on) in
batches of up to ``batch_size`` rows, left-padded with the tokenizer's pad id and an attention
mask. Generation stops at any end-of-turn id (:func:`preftune.data.tokenize.end_of_turn_ids`:
EOS and the known end-of-turn tokens, ``<|im_end|>`` for ChatML) or after ``max_new_tokens``.
A response's ids are exactly those sampled, up to and including the closing end-of-turn token,
as :mod:`preftune.data.tokenize` cuts a training response; nothing after it (no padding).

Only the settings of :class:`SamplingConfig` shape the distribution we pass to ``generate``;
anything else in ``model.generation_config`` (a repetition penalty, say) still applies, as
``generate`` takes it from there. On a CPU each token is drawn by
:class:`~preftune.generation.token_draw.InverseCdfDraw` (one uniform number per row) instead of
``torch.multinomial``, which costs as much as a small model's forward pass there; the sampling
warpers of the model's generation config beyond temperature, top-k and top-p (min-p, typical-p)
are then not applied.

Randomness: with ``seed`` set, batch ``b`` is sampled after ``torch.manual_seed(seed + b)``
inside :func:`torch.random.fork_rng`, so the same prompts and config (``batch_size`` included)
give the same samples, and the global CPU and CUDA RNG states (the trainer's) are as they were
before. With ``seed=None`` sampling draws from, and advances, the global RNG, as ``generate`` does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from preftune.data.tokenize import end_of_turn_ids
from preftune.errors import PreftuneError, SpecError
from preftune.progress import QUIET_S, StepProgress


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample (checked when built; a bad value raises :class:`SpecError`).

    Attributes:
        n: responses per prompt (≥ 1).
        temperature: softmax temperature (≥ 0); 0 means greedy (argmax, no sampling).
        top_p: nucleus sampling mass, in (0, 1]; 1 keeps every token.
        top_k: keep only the k most likely tokens (≥ 0); 0 keeps every token.
        max_new_tokens: the most tokens a response may have (≥ 1).
        batch_size: the most sequences (prompt repeats included) per ``generate`` call (≥ 1).
        seed: makes sampling reproducible without disturbing the global RNG (see the module
            docstring); None draws from the global RNG.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 128
    batch_size: int = 16
    seed: int | None = None

    def __post_init__(self) -> None:
        problems = [
            (self.n >= 1, f"n must be at least 1, not {self.n}"),
            (self.temperature >= 0, f"temperature must be ≥ 0 (0 is greedy), not {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], not {self.top_p}"),
            (self.top_k >= 0, f"top_k must be ≥ 0 (0 keeps every token), not {self.top_k}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be at least 1, not {self.max_new_tokens}"),
            (self.batch_size >= 1, f"batch_size must be at least 1, not {self.batch_size}"),
        ]
        for ok, message in problems:
            if not ok:  # also False for NaN
                raise SpecError(f"sampling: {message}")

    @property
    def greedy(self) -> bool:
        """Whether this config takes the argmax instead of sampling (temperature 0)."""
        return self.temperature == 0


@dataclass(frozen=True)
class Sample:
    """One sampled response to one prompt.

    Attributes:
        prompt_index: the prompt's position in the list given to :func:`sample`.
        prompt_ids: ``[P]`` the prompt's ids, as given (no padding).
        response_ids: ``[R]`` the ids as sampled, ``1 ≤ R ≤ max_new_tokens``; when ``finished``,
            the last one is the end-of-turn/EOS token that closed the response, and none before it is.
        text: the response decoded without special tokens, stripped.
        finished: True when the response ended with an end-of-turn token, False when it was cut
            by ``max_new_tokens``.
    """

    prompt_index: int
    prompt_ids: list[int]
    response_ids: list[int]
    text: str
    finished: bool


def _trim(generated: torch.Tensor, stop_ids: Sequence[int]) -> list[tuple[list[int], bool]]:
    """Cut generated rows just after their first stop id.

    Args:
        generated: ``[B, T]`` the new tokens of each row (``generate``'s output less the prompt
            columns); a row that finished early is padded after its stop token.
        stop_ids: the ids that end a response.

    Returns:
        ``B`` pairs (ids up to and including the first stop id, True), or (the whole row, False)
        for a row without one.
    """
    rows = generated.tolist()
    stops = set(stop_ids)
    out = []
    for row in rows:
        end = next((i for i, token in enumerate(row) if token in stops), None)
        out.append((row, False) if end is None else (row[: end + 1], True))
    return out


#: Prefill each prompt once and give its KV cache to its n rows (:func:`_shared_prefill`); a switch
#: for tests and benchmarks that compare with every row's own prefill.
SHARE_PREFILL = True
#: Decode into a KV cache written in place (:mod:`preftune.generation.kv_cache`) instead of one that
#: ``torch.cat``\ s every step; a switch for tests and benchmarks that compare with transformers' own.
PREALLOCATE_CACHE = True


def _shared_prefill(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, n: int, cache: Any = None) -> Any:
    """The KV cache of the batch's prompts but their last token, each distinct prompt computed once
    and repeated for its ``n`` consecutive rows (``cache.batch_repeat_interleave``); None when the
    rows are not whole groups of n equal prompts (then ``generate`` prefills every row itself).

    The prompt pass is most of a round's sampling cost on a CPU (16 rows of ~180 tokens: 3.4 s of
    8.8 s on SmolLM2 in bf16); the n samples of a prompt share it. The last prompt token is left to
    ``generate``, which computes its logits and continues from the cache, positions taken from the
    attention mask as ``generate`` takes them. ``cache``: the (empty) cache to fill, else the model's own."""
    rows = input_ids.shape[0]
    if n < 2 or rows % n or input_ids.shape[1] < 2:
        return None
    groups = input_ids.view(rows // n, n, -1)
    if not bool((groups == groups[:, :1]).all()):
        return None
    ids, attention = input_ids[::n, :-1], mask[::n, :-1]
    positions = (attention.long().cumsum(-1) - 1).masked_fill(attention == 0, 1)
    inputs = {"input_ids": ids, "attention_mask": attention, "position_ids": positions, "use_cache": True}
    if cache is not None:
        inputs[_cache_kwarg()] = cache
    with torch.no_grad():
        try:
            out = model(**inputs, logits_to_keep=1)  # only the last position's logits, not [rows, L, vocab]
        except TypeError:  # a model whose forward has no logits_to_keep
            out = model(**inputs)
    cache = getattr(out, "cache", None) or out.past_key_values
    cache.batch_repeat_interleave(n)
    return cache


def _cache_kwarg() -> str:
    """The name ``generate`` takes a cache by: ``cache`` in newer transformers, ``past_key_values`` before."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


def _left_pad(prompts: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``([B, L] ids, [B, L] attention mask)``: each prompt right-aligned, pad columns on its left."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if len(prompt):
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _generate_kwargs(config: SamplingConfig, stop_ids: list[int], pad_id: int, device: torch.device) -> dict[str, Any]:
    """``generate`` settings for ``config``: every sampling knob explicit (HF's default top_k is 50).

    On a CPU, sampling draws each token with :class:`~preftune.generation.token_draw.InverseCdfDraw`
    (``do_sample=False`` then takes the drawn token): ``torch.multinomial`` over a large vocabulary is
    a large share of a small model's decoding step there. Elsewhere ``generate`` samples itself.
    """
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens,
        "do_sample": not config.greedy,
        "num_beams": 1,
        "use_cache": True,
        "eos_token_id": stop_ids,
        "pad_token_id": pad_id,
        "return_dict_in_generate": False,
    }
    if config.greedy:
        return kwargs
    if device.type == "cpu":
        from transformers import LogitsProcessorList

        from preftune.generation.token_draw import InverseCdfDraw

        draw = InverseCdfDraw(config.temperature, config.top_k, config.top_p)
        kwargs.update(
            do_sample=False, temperature=None, top_p=None, top_k=None, logits_processor=LogitsProcessorList([draw])
        )
    else:
        kwargs.update(temperature=config.temperature, top_p=config.top_p, top_k=config.top_k)
    return kwargs


@contextlib.contextmanager
def _generation_mode(model: Any) -> Iterator[None]:
    """Eval mode and ``config.use_cache`` on for the block; both restored after (training turns the cache off)."""
    was_training = model.training
    config = getattr(model, "config", None)
    had_cache = getattr(config, "use_cache", None)
    model.eval()
    if config is not None:
        config.use_cache = True
    try:
        yield
    finally:
        model.train(was_training)
        if config is not None:
            config.use_cache = had_cache


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """``torch.manual_seed(seed)`` for the block, the global CPU and CUDA RNG states restored after; nothing if None."""
    if seed is None:
        yield
        return
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _stop_and_pad(tokenizer: Any) -> tuple[list[int], int]:
    """(the sorted end-of-turn ids, the pad id: the tokenizer's, else the first stop id)."""
    stop_ids = sorted(end_of_turn_ids(tokenizer))
    if not stop_ids:
        raise PreftuneError("the tokenizer has no EOS or end-of-turn token, so a response could never finish")
    pad_id = tokenizer.pad_token_id
    return stop_ids, int(stop_ids[0] if pad_id is None else pad_id)


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    config: SamplingConfig,
    progress: bool = False,
) -> list[Sample]:
    """Sample ``config.n`` responses to each tokenised prompt (see the module docstring).

    Args:
        model: a transformers causal LM, or a peft model wrapping one; its train/eval mode and
            ``config.use_cache`` are restored afterwards.
        tokenizer: its tokenizer (stop ids, pad id, decoding).
        prompts: ``len(prompts)`` lists of ``[P_i]`` token ids, chat template and generation
            prompt included (as :class:`preftune.data.groups.TokenizedGroup.prompt_ids`).
        config: how to sample.
        progress: show a bar with ETA over the batches (stderr).

    Returns:
        ``len(prompts) * n`` samples, prompt-major: prompt 0's n samples, then prompt 1's, ...
    """
    for index, prompt in enumerate(prompts):
        if not len(prompt):
            raise PreftuneError(f"prompt {index} is empty; sampling needs at least one prompt token")
    from preftune.generation.kv_cache import preallocated_cache

    stop_ids, pad_id = _stop_and_pad(tokenizer)
    rows = [index for index in range(len(prompts)) for _ in range(config.n)]
    batches = [rows[start : start + config.batch_size] for start in range(0, len(rows), config.batch_size)]
    device = next(model.parameters()).device
    kwargs = _generate_kwargs(config, stop_ids, pad_id, device)
    out: list[Sample] = []
    bar = StepProgress(len(batches), enabled=progress, description="sampling", unit="batch", quiet_s=QUIET_S)
    with _generation_mode(model), bar:
        for number, batch in enumerate(batches):
            input_ids, mask = _left_pad([prompts[i] for i in batch], pad_id, device)
            cache = preallocated_cache(model, input_ids.shape[1] + config.max_new_tokens) if PREALLOCATE_CACHE else None
            shared = _shared_prefill(model, input_ids, mask, config.n, cache) if SHARE_PREFILL else None
            cache = cache if shared is None else shared
            extra = {} if cache is None else {_cache_kwarg(): cache}
            with _seeded(None if config.seed is None else config.seed + number):
                generated = model.generate(input_ids=input_ids, attention_mask=mask, **kwargs, **extra)
            for index, (ids, finished) in zip(batch, _trim(generated[:, input_ids.shape[1] :], stop_ids), strict=True):
                text = tokenizer.decode(ids, skip_special_tokens=True).strip()
                out.append(Sample(index, [int(t) for t in prompts[index]], ids, text, finished))
            bar.advance({})
    return out
