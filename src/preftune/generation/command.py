"""``preftune generate``: N sampled completions per prompt, to JSON Lines that ``preftune rank`` reads.

    >>> done = open_output(out, settings)              # before loading a model: refuses a mismatch
    >>> report = generate_file(model, tokenizer, prompts, out, settings, done=done)

Output: one row per prompt, ``{"prompt", "completions", "finished", "model", "seed"}``, appended
(flush + fsync) as soon as that prompt's N completions exist. The prompt is written as read (a
string or messages), so ``preftune rank --input OUT`` reads the file as is (with N ≥ 2).

Resuming: :func:`open_output` reads an existing ``OUT``; a last line without its newline (a kill
mid-write) is dropped and the file rewritten atomically without it; the prompts already there
(matched by content) are skipped. The settings are kept in ``OUT.meta.json`` (written atomically);
a rerun with a different model, n, seed, sampling setting or backend (``hf``, ``vllm``; a meta file
without one was written by ``hf``) is refused in one line.

Chunks and seeds: the prompt list is cut into fixed chunks of ``chunk_prompts`` (default: as
many as fit one batch of ``batch_size`` sequences); each chunk's prompts not yet in ``OUT`` go to
:func:`~preftune.generation.sampling.sample` together, and their rows are written when it returns,
so a kill loses at most the chunk in flight. A chunk is sampled with a seed derived from (seed, the
prompts it samples), so a resumed run writes the same completions as an uninterrupted one (same
prompts, device, batch size and chunking), except for a chunk whose rows were only partly written
when the kill came: its remaining prompts are sampled alone, with another seed (and every prompt
still just once). A different ``limit`` or input order regroups the chunks, and so the samples.

Empty completions: ``preftune rank`` refuses an empty completion, so a completion that decodes to
nothing (the model closed its turn at once) is drawn again, up to ``REDRAWS`` times, and counted;
one still empty after that is written as is (and counted).

Test-only hook: with ``PREFTUNE_TEST_KILL_AFTER_CHUNKS=K`` in the environment, the process
SIGKILLs itself right after writing its K-th chunk (to test resuming after a real kill).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from preftune.errors import PreftuneError
from preftune.files import write_atomic, write_json_atomic
from preftune.generation.prompts import Prompt, check_tokenizer, encode_prompt, prompt_key
from preftune.generation.sampling import Sample, SamplingConfig, sample

REDRAWS = 3
KILL_HOOK = "PREFTUNE_TEST_KILL_AFTER_CHUNKS"
Sampler = Callable[[Any, Any, list[list[int]], SamplingConfig], list[Sample]]  # ``sample``'s signature


@dataclass(frozen=True)
class Settings:
    """What shapes the completions; a resumed run must match them (kept in ``OUT.meta.json``)."""

    model: str
    n: int
    seed: int | None
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int
    backend: str = "hf"

    @classmethod
    def of(cls, model: str, config: SamplingConfig, backend: str = "hf") -> Settings:
        return cls(
            model, config.n, config.seed, config.temperature, config.top_p, config.top_k, config.max_new_tokens, backend
        )


@dataclass
class GenerateReport:
    """What a run did: prompts in all, skipped (already in OUT), generated, completions, tokens, seconds."""

    prompts: int = 0
    skipped: int = 0
    generated: int = 0
    completions: int = 0
    tokens: int = 0
    seconds: float = 0.0
    redrawn: int = 0
    empty: int = 0

    def __str__(self) -> str:
        seconds = max(self.seconds, 1e-9)
        text = (
            f"{self.generated} prompts generated ({self.skipped} already in the output), {self.completions} "
            f"completions, {self.tokens} tokens in {self.seconds:.1f}s: {self.completions / seconds:.2f} "
            f"completions/s, {self.tokens / seconds:.1f} tokens/s"
        )
        if self.redrawn:
            text += f"; {self.redrawn} empty completions drawn again"
        if self.empty:
            text += f"; {self.empty} still empty (preftune rank refuses those rows)"
        return text


def meta_path(out: Path) -> Path:
    return out.with_name(out.name + ".meta.json")


def open_output(out: str | Path, settings: Settings) -> set[str]:
    """Check ``out`` for resuming, repair a truncated last line, and return the keys of the prompts done.

    Raises:
        PreftuneError: ``out`` is not ours (no meta file), was made with other settings, or has a bad row.
    """
    out = Path(out)
    meta = meta_path(out)
    if out.is_dir():
        raise PreftuneError(f"out={out} is a folder")
    data = out.read_bytes() if out.exists() else b""
    if data and not meta.is_file():
        raise PreftuneError(
            f"{out} exists but has no {meta.name}, so it was not written by preftune generate; "
            "remove it or choose another out="
        )
    if meta.is_file() and data:
        try:
            before = {"backend": "hf", **json.loads(meta.read_text(encoding="utf-8"))}  # older files: hf
        except (OSError, ValueError) as err:
            raise PreftuneError(f"{meta}: unreadable ({err})") from None
        now = asdict(settings)
        changed = [f"{k} {before.get(k)!r} -> {v!r}" for k, v in now.items() if before.get(k) != v]
        if changed:
            raise PreftuneError(
                f"{out} was generated with other settings ({'; '.join(changed)}); "
                "use another out=, or the same settings to resume"
            )
    lines = data.split(b"\n")
    if lines[-1]:  # no newline at the end: a row cut by a kill
        data = b"".join(line + b"\n" for line in lines[:-1])
        write_atomic(out, data)
    done: set[str] = set()
    for number, line in enumerate(lines[:-1], start=1):
        try:
            row = json.loads(line)
            done.add(prompt_key(row["prompt"]))
        except (ValueError, KeyError, TypeError):
            raise PreftuneError(
                f"{out} line {number}: not a row of preftune generate; remove the file to start again"
            ) from None
    write_json_atomic(meta, asdict(settings))
    return done


def chunk_seed(seed: int, keys: Sequence[str]) -> int:
    """A seed for one chunk from the run's seed and the chunk's prompts (independent of earlier chunks)."""
    digest = hashlib.sha256("\n".join([str(seed), *keys]).encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def _append(handle: Any, row: dict[str, Any]) -> None:
    handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
    handle.flush()
    os.fsync(handle.fileno())


def generate_file(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    out: str | Path,
    config: SamplingConfig,
    *,
    model_name: str,
    done: set[str] | None = None,
    chunk_prompts: int | None = None,
    progress: Callable[[], None] | None = None,
    sampler: Sampler | None = None,
    backend: str = "hf",
) -> GenerateReport:
    """Sample ``config.n`` completions per prompt not already in ``out`` and append a row for each.

    Args:
        model, tokenizer: the policy to sample from.
        prompts: distinct prompts (:func:`preftune.generation.prompts.read_prompts`).
        out: the JSON Lines output (see the module docstring).
        config: how to sample; its ``seed`` is the run's seed (None: not reproducible).
        model_name: written in each row and in the meta file.
        done: the keys :func:`open_output` returned; None calls it here.
        chunk_prompts: prompts per ``sample`` call (default: ``max(1, batch_size // n)``).
        progress: called once per prompt written.
        sampler: a function with ``sample``'s signature (default: ``sample``; ``vllm_backend.sample_vllm``
            with a ``VllmSampler`` as ``model``).
        backend: the sampler's name in the meta file when ``done`` is None (``hf``, ``vllm``).
    """
    out = Path(out)
    sampler = sampler or sample
    if done is None:
        done = open_output(out, Settings.of(model_name, config, backend))
    check_tokenizer(tokenizer, list(prompts))
    todo = [p for p in prompts if prompt_key(p) not in done]
    report = GenerateReport(prompts=len(prompts), skipped=len(prompts) - len(todo))
    size = chunk_prompts or max(1, config.batch_size // config.n)
    kill_after = int(os.environ.get(KILL_HOOK, "0") or 0)
    began = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "ab") as handle:
        for number, chunk in enumerate(_pending_chunks(prompts, done, size), start=1):
            texts, finished = _sample_chunk(sampler, model, tokenizer, chunk, config, report)
            _write_rows(handle, chunk, texts, finished, config, model_name, report, progress)
            report.completions += len(texts)
            if kill_after and number >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
    report.seconds = time.perf_counter() - began
    return report


def _pending_chunks(prompts: Sequence[Prompt], done: set[str], size: int) -> list[list[Prompt]]:
    """The prompts not yet done, in fixed chunks of ``size`` of the whole list (chunks left empty dropped).

    The chunks are cut from the whole list, not from the prompts left, so that a resumed run
    groups (and so seeds) the prompts as an uninterrupted one did.
    """
    chunks = [
        [p for p in prompts[start : start + size] if prompt_key(p) not in done]
        for start in range(0, len(prompts), size)
    ]
    return [c for c in chunks if c]


def _sample_chunk(
    sampler: Sampler,
    model: Any,
    tokenizer: Any,
    chunk: list[Prompt],
    config: SamplingConfig,
    report: GenerateReport,
) -> tuple[list[str], list[bool]]:
    """``config.n`` completions per prompt of ``chunk`` (texts, finished flags), empty ones drawn again."""
    keys = [prompt_key(p) for p in chunk]
    seed = None if config.seed is None else chunk_seed(config.seed, keys)
    ids = [encode_prompt(tokenizer, p) for p in chunk]
    samples = sampler(model, tokenizer, ids, _with(config, seed=seed))
    texts = [s.text for s in samples]
    finished = [s.finished for s in samples]
    report.tokens += sum(len(s.response_ids) for s in samples)
    _redraw_empty(sampler, model, tokenizer, ids, config, seed, texts, finished, report)
    return texts, finished


def _write_rows(
    handle: Any,
    chunk: list[Prompt],
    texts: list[str],
    finished: list[bool],
    config: SamplingConfig,
    model_name: str,
    report: GenerateReport,
    progress: Callable[[], None] | None,
) -> None:
    """Append one row per prompt of ``chunk`` (its ``config.n`` completions), each synced as it is written."""
    n = config.n
    for k, prompt in enumerate(chunk):
        _append(
            handle,
            {
                "prompt": prompt,
                "completions": texts[k * n : (k + 1) * n],
                "finished": finished[k * n : (k + 1) * n],
                "model": model_name,
                "seed": config.seed,
            },
        )
        report.generated += 1
        if progress is not None:
            progress()


def _with(config: SamplingConfig, **changes: Any) -> SamplingConfig:
    return SamplingConfig(**{**asdict(config), **changes})


def _redraw_empty(
    sampler: Sampler,
    model: Any,
    tokenizer: Any,
    ids: list[list[int]],
    config: SamplingConfig,
    seed: int | None,
    texts: list[str],
    finished: list[bool],
    report: GenerateReport,
) -> None:
    """Draw empty completions again (one sequence each), up to ``REDRAWS`` rounds; count what stays empty."""
    for round_ in range(1, REDRAWS + 1):
        empty = [i for i, text in enumerate(texts) if not text.strip()]
        if not empty:
            return
        again = sampler(
            model,
            tokenizer,
            [ids[i // config.n] for i in empty],
            _with(config, n=1, seed=None if seed is None else seed + 7919 * round_),
        )
        report.redrawn += len(empty)
        report.tokens += sum(len(s.response_ids) for s in again)
        for i, s in zip(empty, again, strict=True):
            texts[i], finished[i] = s.text, s.finished
    report.empty += sum(1 for text in texts if not text.strip())
