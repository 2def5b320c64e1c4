"""Batch sources: a round's buffer of samples resumes exactly after a SIGKILL, and an objective
that reads no rejected response gets none in its batches (no forward pass spent on it).

- :class:`~preftune.training.sources.BufferSource`: an on-policy round cannot be sampled again,
  so a checkpoint must hold the round's samples and the step within the round's passes. A worker
  process (``buffer_worker.py``) trains 8 steps (2 passes over 16 groups) and is killed with
  SIGKILL after step 5, in the second pass; the resumed process is handed *other* samples, so it
  can only finish like the uninterrupted run if it reads the checkpoint's.
- :func:`~preftune.training.loop.responses_read`: ``mle`` reads the chosen response only, so its
  step must feed the decoder prompt + chosen tokens, counted at the decoder's input.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from preftune.data import Batcher, bundled_path, load_preference_data, tokenize_examples
from preftune.errors import PreftuneError
from preftune.modeling import (
    AdapterDisabledReference,
    apply_lora,
    causal_lm_parts,
    load_model,
    load_tokenizer,
    tiny_model_path,
)
from preftune.objectives import build
from preftune.run.config import OptimConfig
from preftune.training.loop import Trainer, make_plan, responses_read
from preftune.training.sources import BufferSource, DatasetSource
from tests.training.buffer_worker import BATCH, PASSES, SEED, TOTAL_STEPS, buffer_samples
from tests.training.common import TIMEOUT, assert_same_tensors, subprocess_env

WORKER = str(Path(__file__).with_name("buffer_worker.py"))
KILL_AT = 5  # in the second pass (steps 5..8), after its first step


# --- a buffer resumes exactly after SIGKILL -------------------------------------------------------


def _worker(out: Path, name: str, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            WORKER,
            str(out),
            str(out.parent / f"{name}.safetensors"),
            str(out.parent / f"{name}.json"),
            *flags,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
        cwd=Path(__file__).resolve().parents[2],
    )


def _finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.returncode, err


@pytest.mark.slow
def test_a_buffer_source_resumes_exactly_after_sigkill_mid_round(tmp_path: Path) -> None:
    """A run killed (SIGKILL, no clean-up) after step 5 of 8 and resumed from its checkpoint ends
    with bit-identical trainable weights and the same per-step losses as an uninterrupted run,
    running only the 3 lost steps. The resumed process builds its buffer from other HH pairs with
    other rewards: equality proves the round's samples and its position in the second pass came
    back from the checkpoint (``source.pt``), not from the script. The checkpoint's source state
    is also refused by a buffer of other settings (passes, seed, round)."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # the two independent runs side by side, one thread each
    processes = [_worker(whole, "whole"), _worker(killed, "killed", "--kill-after", str(KILL_AT))]
    try:
        (whole_rc, whole_err), (killed_rc, killed_err) = [_finish(p) for p in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert whole_rc == 0, whole_err
    assert killed_rc == -signal.SIGKILL, killed_err
    checkpoint = killed / "checkpoints" / f"step-{KILL_AT:06d}"
    assert checkpoint.is_dir()
    assert not (tmp_path / "killed.json").exists(), "the killed run must not have finished"

    # The checkpoint's source state: the round's samples and the step, tied to the buffer's settings.
    state = torch.load(checkpoint / "source.pt", weights_only=True)
    round_samples, pad_id = buffer_samples()
    others, _ = buffer_samples(other=True)
    batcher = Batcher(pad_id, "shared")

    def buffer(**settings) -> BufferSource:
        return BufferSource(others, batcher, **({"batch_size": BATCH, "passes": PASSES, "seed": SEED} | settings))

    assert state["kind"] == "buffer" and state["step"] == KILL_AT
    source = buffer()
    source.load_state_dict(state)
    assert source.step == KILL_AT
    assert [(g.prompt_ids, g.responses, g.rewards) for g in source.items] == [
        (g.prompt_ids, g.responses, g.rewards) for g in round_samples
    ]
    for changed in ({"passes": PASSES + 1}, {"seed": SEED + 1}, {"round": 1}):
        with pytest.raises(PreftuneError, match="the checkpoint's buffer was made with"):
            buffer(**changed).load_state_dict(state)

    resumed_rc, resumed_err = _finish(_worker(killed, "killed", "--resume"))
    assert resumed_rc == 0, resumed_err

    uninterrupted = json.loads((tmp_path / "whole.json").read_text(encoding="utf-8"))
    resumed = json.loads((tmp_path / "killed.json").read_text(encoding="utf-8"))
    assert uninterrupted["ran"] == TOTAL_STEPS and uninterrupted["global_step"] == TOTAL_STEPS
    assert resumed["ran"] == TOTAL_STEPS - KILL_AT, "the resumed run must run the lost steps only"
    assert resumed["global_step"] == TOTAL_STEPS
    assert resumed["steps"] == uninterrupted["steps"] == list(range(1, TOTAL_STEPS + 1))
    # steps 1..5 from the checkpoint's history, 6..8 computed again: all equal, exactly
    assert resumed["losses"] == uninterrupted["losses"]
    assert_same_tensors(load_file(str(tmp_path / "killed.safetensors")), load_file(str(tmp_path / "whole.safetensors")))


# --- mle reads no rejected response ---------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_model() -> torch.nn.Module:
    """The tiny model under LoRA (rank 4, float32): a peft model, for the adapter-disabled reference."""
    torch.manual_seed(0)
    return apply_lora(load_model(tiny_model_path(), dtype="float32"), rank=4)


@pytest.fixture(scope="module")
def hh(lora_model) -> tuple[list, int]:
    """8 real HH-RLHF pairs (tiny model's tokenizer, 96 tokens) and a pad id none of them holds, so
    that counting ids other than the pad id at the decoder's input counts real tokens exactly."""
    tokenizer = load_tokenizer(tiny_model_path())
    examples, _ = load_preference_data(bundled_path("hh-harmless"))
    pairs, _ = tokenize_examples(examples[:8], tokenizer, max_length=96, max_prompt_length=64)
    assert len(pairs) == 8
    pad = lora_model.get_input_embeddings().weight.shape[0] - 1
    assert all(pad not in p.prompt_ids + p.chosen_ids + p.rejected_ids for p in pairs)
    return pairs, pad


@pytest.fixture
def accelerator() -> Iterator:
    from preftune.training import forget_accelerator_state, make_accelerator

    try:
        yield make_accelerator("no", cpu=True)
    finally:
        forget_accelerator_state()


def test_responses_read_by_objective() -> None:
    """Chosen only for ``mle``; both responses of a pair when a term reads the rejected one; all of a
    group's (None) for a group objective."""
    assert responses_read(build("mle")) == 1
    assert responses_read(build("dpo")) == 2
    assert responses_read(build("exmate")) == 2
    assert responses_read(build("mle + exmate")) == 2
    assert responses_read(build("reinforce")) is None


@pytest.mark.parametrize(
    ("spec", "layout"), [("mle", "shared"), ("mle", "padded"), ("dpo", "shared"), ("exmate", "padded")]
)
def test_a_step_feeds_the_decoder_only_the_responses_its_objective_reads(
    lora_model, hh, accelerator, spec: str, layout: str
) -> None:
    """One ``Trainer.step`` over a :class:`DatasetSource` built with ``group_size=responses_read``.

    A forward pre-hook on the decoder counts the ids other than the pad id it is given (the pad id
    appears in no pair, so this is exactly the real tokens, in any layout), separately for forwards
    with gradients (the policy) and without (the reference). ``mle`` must feed prompt + chosen of
    the step's pairs and nothing else; ``dpo`` and ``exmate`` also the rejected response (the prompt
    once per pair in the shared layout, twice in the padded one); only ``dpo`` runs a reference
    forward, over the same tokens. The step's ``tokens`` statistic agrees, and ``mle``'s statistics
    hold no metric of the rejected response or of the reference."""
    pairs, pad = hh
    objective = build(spec)
    optim = OptimConfig(lr=1e-3, batch_size=4, warmup_ratio=0.0)
    plan = make_plan(pairs, optim, 1, group_by_length=False)
    source = DatasetSource(pairs, Batcher(pad, layout), plan, 1, group_size=responses_read(objective))
    reference = AdapterDisabledReference(lora_model) if objective.needs_reference else None
    trainer = Trainer(
        accelerator=accelerator, model=lora_model, objective=objective, optim=optim, total_steps=1, reference=reference
    )

    fed: dict[bool, list[int]] = {True: [], False: []}  # grad enabled -> real tokens of each forward

    def count(module, args, kwargs) -> None:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        fed[torch.is_grad_enabled()].append(int((ids != pad).sum()))

    decoder = causal_lm_parts(lora_model)[0]
    handle = decoder.register_forward_pre_hook(count, with_kwargs=True)
    try:
        micro = next(source)
        stats = trainer.step(micro)
    finally:
        handle.remove()

    read = [pairs[i] for i in plan.step_indices(0).tolist()]
    assert [int(i) for b in micro for i in b.example_ids] == plan.step_indices(0).tolist()
    prompt = sum(len(p.prompt_ids) for p in read)
    chosen = sum(len(p.chosen_ids) for p in read)
    rejected = sum(len(p.rejected_ids) for p in read)
    if spec == "mle":
        expected = prompt + chosen
    else:
        expected = prompt + chosen + rejected + (prompt if layout == "padded" else 0)
    assert fed[True] == [expected], "the policy's forward"
    assert fed[False] == ([expected] if spec == "dpo" else []), "the reference's forward"
    assert stats["tokens"] == expected
    assert stats["skipped"] == 0.0
    assert "logps/chosen" in stats
    reads_rejected = {"logps/rejected"}
    reads_reference = {"rewards/chosen", "rewards/rejected", "margin", "accuracy"}
    if spec == "mle":
        assert not (reads_rejected | reads_reference) & stats.keys()
        assert not any(k.startswith("rewards/") for k in stats)
    else:
        assert reads_rejected <= stats.keys()
        assert bool(reads_reference <= stats.keys()) == (spec == "dpo")


def test_a_restored_buffer_follows_the_checkpoints_samples_whatever_the_new_buffer_holds() -> None:
    """A resumed process cannot sample the round again: its placeholder buffer may be of any size, and the
    steps after the restore must read the checkpoint's samples in the checkpoint's order."""
    samples, pad_id = buffer_samples()
    batcher = Batcher(pad_id, "padded")
    settings = {"batch_size": BATCH, "passes": PASSES, "seed": SEED}
    original = BufferSource(samples, batcher, **settings)
    for _ in range(5):
        next(original)
    state = original.state_dict()
    expected = [[b.example_ids.tolist() for b in micro] for micro in original]
    for size in (12, 17, 20):
        restored = BufferSource(samples[:1] * size, batcher, **settings)
        restored.load_state_dict(state)
        got = [[b.example_ids.tolist() for b in micro] for micro in restored]
        assert got == expected and len(restored.items) == len(samples)
