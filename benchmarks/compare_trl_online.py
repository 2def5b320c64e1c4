"""preftune's on-policy loop (``OnPolicySource``) against TRL's ``OnlineDPOTrainer`` and ``RLOOTrainer`` (issue 11).

Two workloads, each run by three sides in fresh subprocesses (``--child``), so each peak resident set is its own:

- ``dpo-c2``: preftune ``OnPolicySource`` with on-policy ``dpo(beta=0.1)``, C = 2 samples per prompt, best vs worst,
  against TRL ``OnlineDPOTrainer`` (which samples exactly 2 per prompt, sigmoid loss, beta = 0.1). Both use the
  policy with its LoRA adapter disabled as the reference.
- ``reinforce-c4``: preftune ``reinforce`` (leave-one-out baseline, no KL), C = 4, against TRL ``RLOOTrainer`` with
  ``num_generations=4`` and ``beta=0`` (no KL term, so no reference forward, like preftune's ``reinforce``).
- ``preftune`` samples as ``preftune train`` does by default (``sampling.dtype=auto``): from a bfloat16 copy of
  the policy, its weights refreshed each round, where bf16 is native (AMX, AVX-512 BF16), else with the policy;
  ``preftune-fp32`` always samples with the float32 policy itself, as TRL does. Training is float32 on these sides;
  ``preftune-auto`` is preftune's own defaults (bf16 autocast where bf16 is native, a bf16 sampling copy).
- ``preftune-replay``: the ``preftune`` side's run again with no sampler: each round's samples are the ones the
  ``preftune`` side drew in the same repeat (saved to a file beside ``--out``), handed back at once. Training,
  labels and the reference are the same, so its peak resident set is the training's own: the ``preftune`` side's
  peak less this one is what sampling adds (the target: at most the sampler's weights).
- ``SIDE:gaK`` (e.g. ``preftune:ga2``, ``trl:ga2``): the side with each optimiser step's rows in K micro-batches
  (preftune: ``optim.grad_accumulation=K``, the same ``batch_size``; TRL: ``per_device_train_batch_size`` divided
  by K and ``gradient_accumulation_steps=K``, so TRL also generates K times a round). The same updates up to
  float rounding, fewer activations held at once: the peak resident set of a step's micro-batch, not its whole.
- ``generate``: a plain ``model.generate`` loop over the same prompts and rows per call (the same LoRA-wrapped model,
  KV cache on, the same sampling settings): the generation speed both libraries are measured against.

Shared settings: the embedded SmolLM2-135M-Instruct (``ensure_embedded_model``: one local folder for both sides),
LoRA (``workloads.LORA_*``), fp32, the first ``rounds * prompts`` distinct conversational prompts of the bundled
HH-RLHF harmless subset whose chat-templated prompt has at most ``--max-prompt-tokens`` tokens, temperature 1,
top-p 1, top-k 0, ``--max-new-tokens``, learning rate 5e-6, gradient clipping at 1, no gradient checkpointing, one
optimiser step per round (preftune: ``batch_size = prompts``; TRL: ``per_device_train_batch_size = prompts`` for
online DPO, ``prompts * 4`` completions with one generation per step for RLOO), ``rounds`` steps, seed fixed.
All rows of a round are generated in one ``generate`` call on every side. The reward is the response's length in
characters (preftune: ``make_labeller("length")``; TRL: a reward function returning ``len(text.strip())``).

What is timed: ``wall_s`` is the on-policy training itself (preftune: ``train_rounds(source)``; TRL: from the first
step's ``on_step_begin`` to the last step's ``on_step_end``), not imports nor model loading (``setup_s``).
``samples/s`` is the sampled responses over ``wall_s``. ``gen share`` is generation time over ``wall_s``
(preftune: ``RoundStats``' ``generate_s``; TRL: a timer wrapped around the trainer's ``_generate``, which also
tokenises the prompts and, for RLOO, decodes the completions). ``gen tok/s`` is generated tokens (response tokens up
to and including EOS) over generation time. ``peak RSS`` is the child's ``ru_maxrss``.

Run::

    .venv/bin/python benchmarks/compare_trl_online.py --rounds 2 --prompts 8 --max-new-tokens 64 --repeats 1

Results: a Markdown table on stdout and JSON at ``--out`` (default ``out/bench/compare_trl_online.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from compare_trl import CHILD_ENV_DEFAULTS, MALLOC_ENV, RESULT_PREFIX  # noqa: E402
from workloads import DATA, LEARNING_RATE, LORA_ALPHA, LORA_DROPOUT, LORA_R, LORA_TARGET_MODULES  # noqa: E402

BETA = 0.1
# workload -> (samples per prompt, preftune objective, TRL trainer or None: TRL has no such run)
WORKLOADS = {
    "dpo-c2": (2, f"dpo(beta={BETA})", "OnlineDPOTrainer"),
    "reinforce-c4": (4, "reinforce", "RLOOTrainer"),
    # every pair of a prompt's 4 samples (online.pairing=all): TRL's OnlineDPOTrainer draws 2
    "dpo-all-c4": (4, f"dpo(beta={BETA})", None),
}
# preftune samples from a bfloat16 copy of the policy where bf16 is native (sampling.dtype=auto);
# preftune-fp32 samples with the float32 policy itself, as TRL does; preftune-auto is preftune's own
# defaults on this machine (bf16 autocast training where bf16 is native, optim.mixed_precision=auto),
# the run a user gets, beside TRL's own default (fp32)
SIDES = ("preftune", "preftune-fp32", "preftune-auto", "preftune-replay", "trl", "generate")
MB = 1024 * 1024


def benchmark_prompts(tokenizer: Any, count: int, max_prompt_tokens: int) -> list[list[dict[str, str]]]:
    """The first ``count`` distinct conversational prompts of the bundled subset that fit ``max_prompt_tokens``."""
    from workloads import prompt_tokens

    from preftune.data import bundled_path, load_preference_data

    examples, _ = load_preference_data(bundled_path(DATA))
    out, seen = [], set()
    for example in examples:
        if not example.is_conversational:
            continue
        key = json.dumps(example.prompt, sort_keys=True)
        if key in seen or prompt_tokens(tokenizer, example.prompt) > max_prompt_tokens:
            continue
        seen.add(key)
        out.append([dict(m) for m in example.prompt])
        if len(out) == count:
            return out
    raise SystemExit(f"only {len(out)} distinct prompts of at most {max_prompt_tokens} tokens")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB


def _length_reward(completions: list[Any], **_: Any) -> list[float]:
    """TRL reward function: the response's length in characters (preftune's ``length`` labeller strips too)."""
    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    return [float(len(t.strip())) for t in texts]


# --------------------------------------------------------------------------------------------------- children
class _Recorded:
    """A sampler (``sample``'s contract) that keeps what it returned, call by call, to save for a replay."""

    def __init__(self, sampler: Any) -> None:
        self.sampler, self.calls = sampler, []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.sampler(*args, **kwargs)
        self.calls.append([dataclasses.asdict(s) for s in out])
        return out


class _Replay:
    """A sampler that hands back a recorded run's samples, call by call, and computes nothing."""

    def __init__(self, path: Path) -> None:
        from preftune.generation.sampling import Sample

        self.calls = [[Sample(**s) for s in call] for call in json.loads(path.read_text())]

    def __call__(self, *_: Any, **__: Any) -> Any:
        return self.calls.pop(0)


def child_preftune(args: argparse.Namespace, c: int, objective_spec: str) -> dict[str, Any]:
    from accelerate.utils import set_seed

    from preftune.data import Batcher
    from preftune.generation.copy_sampler import copy_sampler_for
    from preftune.generation.prompts import encode_prompt
    from preftune.generation.sampling import SamplingConfig
    from preftune.judging.labellers import make_labeller
    from preftune.modeling import AdapterDisabledReference, apply_lora, load_model, load_tokenizer
    from preftune.modeling.attention import attention_length
    from preftune.modeling.embedded import ensure_embedded_model
    from preftune.objectives import build
    from preftune.training import OnlineSettings, OnPolicySource, OptimConfig, Trainer, make_accelerator, train_rounds

    t0 = time.perf_counter()
    path = ensure_embedded_model()
    tokenizer = load_tokenizer(path)
    prompts = benchmark_prompts(tokenizer, args.rounds * args.prompts, args.max_prompt_tokens)
    prompt_ids = [encode_prompt(tokenizer, p) for p in prompts]
    from preftune.modeling.precision import auto_mixed_precision

    accelerator = make_accelerator(auto_mixed_precision() if args.child == "preftune-auto" else "no")
    set_seed(args.seed)
    model = load_model(path, dtype="float32", device=accelerator.device)
    model.config.use_cache = False
    model = apply_lora(model, rank=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=LORA_TARGET_MODULES)
    objective = build(objective_spec)
    # as `preftune train` does: the live reference scores each round once, and the round's KL is logged
    reference = AdapterDisabledReference(model)
    pairing = "all" if args.workload == "dpo-all-c4" else "best_vs_worst"
    settings = OnlineSettings(
        rounds=args.rounds,
        prompts_per_round=args.prompts,
        samples_per_prompt=c,
        batch_size=args.prompts,
        seed=args.seed,
        pairing=pairing,
    )
    if pairing == "all":  # as `preftune train` with online.pairing=all: each group read in place
        from preftune.objectives import WithinGroups

        objective = WithinGroups(objective)
    optim = OptimConfig(
        lr=LEARNING_RATE,
        batch_size=args.prompts,
        grad_accumulation=args.grad_accumulation,
        epochs=1.0,
        warmup_ratio=0.0,
        schedule="linear",
        max_grad_norm=1.0,
        seed=args.seed,
        mixed_precision="auto" if args.child == "preftune-auto" else "no",
    )
    trainer = Trainer(
        accelerator=accelerator,
        model=model,
        objective=objective,
        optim=optim,
        total_steps=OnPolicySource.total_steps(settings, objective),
        reference=reference if objective.needs_reference else None,
    )
    sampling = SamplingConfig(
        temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=args.max_new_tokens, batch_size=args.prompts * c
    )
    batcher = Batcher(tokenizer.pad_token_id, "shared", attention_length(model))
    sampler = copy_sampler_for("float32" if args.child == "preftune-fp32" else "auto", "float32")
    sampler_name = "bfloat16 copy" if sampler is not None else "float32 policy"
    if args.child == "preftune-replay":
        sampler, sampler_name = _Replay(args.samples), "replayed"
    elif args.child == "preftune" and args.samples is not None:
        from preftune.generation.sampling import sample

        sampler = _Recorded(sampler or sample)
    source = OnPolicySource(
        trainer,
        tokenizer,
        prompts,
        prompt_ids,
        make_labeller("length"),
        settings,
        sampling,
        batcher,
        reference=reference,
        sampler=sampler,
    )
    t1 = time.perf_counter()
    _, rounds = train_rounds(source)
    wall = time.perf_counter() - t1
    if isinstance(sampler, _Recorded):
        args.samples.write_text(json.dumps(sampler.calls))
    samples = sum(r.samples for r in rounds)
    gen_tokens = sum(r.mean_length * r.samples for r in rounds)
    gen_s = sum(r.generate_s for r in rounds)
    return {
        "wall_s": wall,
        "setup_s": t1 - t0,
        "samples": samples,
        "steps": sum(r.steps for r in rounds),
        "gen_s": gen_s,
        "label_s": sum(r.label_s for r in rounds),
        "train_s": sum(r.train_s for r in rounds),
        "gen_tokens": gen_tokens,
        "reward_mean": [r.reward_mean for r in rounds],
        "rounds": [r.to_dict() for r in rounds],
        "sampler": sampler_name,
        "training": f", {accelerator.mixed_precision} autocast" if args.child == "preftune-auto" else "",
    }


class _GenTimer:
    """Wraps a trainer's ``_generate``: wall time and generated tokens (completion mask / ids) per call."""

    def __init__(self, fn: Any, kind: str) -> None:
        self.fn, self.kind, self.seconds, self.tokens, self.calls = fn, kind, 0.0, 0, 0

    def __call__(self, *a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        out = self.fn(*a, **k)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        if self.kind == "online_dpo":  # (prompt_ids, prompt_mask, completion_ids, completion_mask, ...)
            self.tokens += int(out[3].sum())
        else:  # rloo: (prompt_ids, completion_ids, completions), completion_ids a list of lists
            self.tokens += sum(len(ids) for ids in out[1])
        return out


def child_trl(args: argparse.Namespace, c: int, trainer_name: str) -> dict[str, Any]:
    import tempfile

    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from preftune.modeling.embedded import ensure_embedded_model

    t0 = time.perf_counter()
    path = str(ensure_embedded_model())
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    prompts = benchmark_prompts(tokenizer, args.rounds * args.prompts, args.max_prompt_tokens)
    dataset = Dataset.from_list([{"prompt": p} for p in prompts])
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    peft_config = LoraConfig(
        r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        target_modules=LORA_TARGET_MODULES,
        task_type="CAUSAL_LM",
    )
    ends: list[float] = []
    begins: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            begins.append(time.perf_counter())

        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())

    tmp = tempfile.mkdtemp(prefix="trl-online-")
    common = dict(
        output_dir=tmp,
        max_steps=args.rounds,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="linear",
        warmup_steps=0,
        max_grad_norm=1.0,
        gradient_accumulation_steps=args.grad_accumulation,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=args.seed,
        data_seed=args.seed,
        dataloader_num_workers=0,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        disable_tqdm=True,
    )
    if trainer_name == "OnlineDPOTrainer":
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        config = OnlineDPOConfig(
            **common,
            per_device_train_batch_size=_split(args.prompts, args.grad_accumulation),
            max_new_tokens=args.max_new_tokens,
            max_length=args.max_prompt_tokens + args.max_new_tokens,
            beta=BETA,
            loss_type="sigmoid",
        )
        trainer = OnlineDPOTrainer(
            model=model,
            reward_funcs=_length_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            reward_processing_classes=[tokenizer],
            peft_config=peft_config,
            callbacks=[Timer()],
        )
        kind = "online_dpo"
    else:
        from trl import RLOOConfig, RLOOTrainer

        config = RLOOConfig(
            **common,
            per_device_train_batch_size=_split(args.prompts * c, args.grad_accumulation),
            num_generations=c,
            steps_per_generation=1,
            num_iterations=1,
            max_completion_length=args.max_new_tokens,
            beta=0.0,
            shuffle_dataset=False,
        )
        trainer = RLOOTrainer(
            model=model,
            reward_funcs=_length_reward,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[Timer()],
        )
        kind = "rloo"
    timer = _GenTimer(trainer._generate, kind)
    trainer._generate = timer
    t1 = time.perf_counter()
    trainer.train()
    t2 = time.perf_counter()
    if len(ends) != args.rounds:
        raise RuntimeError(f"expected {args.rounds} steps, timed {len(ends)}")
    wall = ends[-1] - begins[0]
    samples = args.rounds * args.prompts * c
    rewards = [h.get("objective/scores", h.get("reward")) for h in trainer.state.log_history]
    return {
        "wall_s": wall,
        "train_call_s": t2 - t1,
        "setup_s": t1 - t0,
        "samples": samples,
        "steps": len(ends),
        "gen_s": timer.seconds,
        "gen_calls": timer.calls,
        "gen_tokens": timer.tokens,
        "reward_mean": [r for r in rewards if r is not None],
    }


def _split(rows: int, micro_batches: int) -> int:
    """Rows per micro-batch when a step's ``rows`` are split into ``micro_batches`` (refused unless it divides)."""
    if rows % micro_batches:
        raise SystemExit(f"{rows} rows per step do not split into {micro_batches} micro-batches")
    return rows // micro_batches


def parse_side(label: str) -> tuple[str, int]:
    """``"preftune:ga2"`` -> ``("preftune", 2)``; a side without a suffix has one micro-batch a step."""
    side, _, suffix = label.partition(":")
    if side not in SIDES or (suffix and not (suffix.startswith("ga") and suffix[2:].isdigit() and int(suffix[2:]))):
        raise SystemExit(f"unknown side '{label}': one of {', '.join(SIDES)}, optionally with ':gaK' (K micro-batches)")
    if suffix and side == "generate":
        raise SystemExit("the generate side trains nothing: it takes no ':gaK'")
    return side, int(suffix[2:]) if suffix else 1


def child_generate(args: argparse.Namespace, c: int) -> dict[str, Any]:
    """A plain ``model.generate`` loop: per round, the round's prompts x c rows, left-padded, one call."""
    import torch

    from preftune.generation.prompts import encode_prompt
    from preftune.modeling import apply_lora, load_model, load_tokenizer
    from preftune.modeling.embedded import ensure_embedded_model

    t0 = time.perf_counter()
    path = ensure_embedded_model()
    tokenizer = load_tokenizer(path)
    prompts = benchmark_prompts(tokenizer, args.rounds * args.prompts, args.max_prompt_tokens)
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    torch.manual_seed(args.seed)
    model = load_model(path, dtype="float32")
    model = apply_lora(model, rank=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT, target_modules=LORA_TARGET_MODULES)
    model.eval()
    eos = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")]
    pad = tokenizer.pad_token_id
    t1 = time.perf_counter()
    gen_tokens = 0
    for r in range(args.rounds):
        rows = [p for p in ids[r * args.prompts : (r + 1) * args.prompts] for _ in range(c)]
        width = max(map(len, rows))
        input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in rows])
        mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in rows])
        with torch.no_grad():
            out = model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                do_sample=True,
                temperature=1.0,
                top_p=1.0,
                top_k=0,
                max_new_tokens=args.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
                use_cache=True,
            )
        for row in out[:, width:].tolist():
            n = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            gen_tokens += n
    wall = time.perf_counter() - t1
    samples = args.rounds * args.prompts * c
    return {"wall_s": wall, "setup_s": t1 - t0, "samples": samples, "gen_s": wall, "gen_tokens": gen_tokens}


def run_child(args: argparse.Namespace) -> None:
    import torch

    c, objective, trainer_name = WORKLOADS[args.workload]
    if args.child.startswith("preftune"):
        out = child_preftune(args, c, objective)
    elif args.child == "trl":
        out = child_trl(args, c, trainer_name)
    else:
        out = child_generate(args, c)
    out.update(side=args.child, workload=args.workload, peak_rss_mb=_peak_rss_mb(), threads=torch.get_num_threads())
    print(RESULT_PREFIX + json.dumps(out), flush=True)


# --------------------------------------------------------------------------------------------------- parent
def spawn(args: argparse.Namespace, label: str, workload: str) -> dict[str, Any]:
    side, micro_batches = parse_side(label)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        side,
        "--workload",
        workload,
        "--rounds",
        str(args.rounds),
        "--prompts",
        str(args.prompts),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--max-prompt-tokens",
        str(args.max_prompt_tokens),
        "--seed",
        str(args.seed),
        "--grad-accumulation",
        str(micro_batches),
    ]
    if side in ("preftune", "preftune-replay"):
        cmd += ["--samples", str(_samples_path(args, workload, micro_batches))]
    env = {**os.environ, **CHILD_ENV_DEFAULTS, **MALLOC_ENV}
    if args.threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    took = time.perf_counter() - began
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            res = json.loads(line[len(RESULT_PREFIX) :])
            res["process_s"] = took
            res["side"] = label
            return res
    tail = "\n".join(proc.stderr.splitlines()[-25:])
    return {"side": label, "workload": workload, "error": f"exit {proc.returncode}: {tail}"}


def _samples_path(args: argparse.Namespace, workload: str, micro_batches: int) -> Path:
    """Where the ``preftune`` side saves its samples for ``preftune-replay`` (the latest repeat's)."""
    suffix = f"-ga{micro_batches}" if micro_batches > 1 else ""
    return args.out.with_name(f"{args.out.stem}-{workload}{suffix}-samples.json")


def _fmt(x: float | None, spec: str = ".1f") -> str:
    return "n/a" if x is None else format(x, spec)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| workload | side | repeat | wall s | samples/s | ratio to TRL | peak RSS MB | ratio | gen share "
        "| gen tok/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["workload"], r["side"], r["repeat"]): r for r in results}
    for r in results:
        if "error" in r:
            lines.append(f"| {r['workload']} | {r['side']} | {r['repeat']} | error: {r['error'][-200:]!r} |")
            continue
        trl = by.get((r["workload"], "trl", r["repeat"]), {})
        sps = r["samples"] / r["wall_s"]
        trl_sps = trl["samples"] / trl["wall_s"] if "wall_s" in trl else None
        ratio = _fmt(sps / trl_sps, ".2f") if trl_sps and r["side"] != "trl" else ("1.00" if trl_sps else "n/a")
        mem_ratio = _fmt(r["peak_rss_mb"] / trl["peak_rss_mb"], ".2f") if "peak_rss_mb" in trl else "n/a"
        share = r["gen_s"] / r["wall_s"] if r.get("gen_s") is not None else None
        side, micro_batches = parse_side(r["side"])
        tok = r["gen_tokens"] / r["gen_s"] if r.get("gen_s") and side != "preftune-replay" else None
        name = {"trl": WORKLOADS[r["workload"]][2], "generate": "plain generate"}.get(side, "preftune")
        if side.startswith("preftune"):
            name = f"preftune ({r.get('sampler', 'float32 policy')} samples{r.get('training', '')})"
        if micro_batches > 1:
            name += f", {micro_batches} micro-batches a step"
        lines.append(
            f"| {r['workload']} | {name} | {r['repeat']} | {r['wall_s']:.1f} | {sps:.2f} | {ratio} | "
            f"{r['peak_rss_mb']:.0f} | {mem_ratio} | {_fmt(share, '.0%') if r['side'] != 'generate' else '(all)'} | "
            f"{_fmt(tok)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=2, help="rounds = optimiser steps on every side")
    p.add_argument("--prompts", type=int, default=8, help="prompts per round")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--max-prompt-tokens", type=int, default=192, help="only prompts at most this long")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS in the children (0: torch's default)")
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--sides", default=",".join(SIDES))
    p.add_argument("--out", type=Path, default=Path("out/bench/compare_trl_online.json"))
    p.add_argument("--child", choices=SIDES, help=argparse.SUPPRESS)
    p.add_argument("--workload", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    p.add_argument("--samples", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--grad-accumulation", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sides = args.sides.split(",")
    for label in sides:
        side, micro_batches = parse_side(label)
        source = "preftune" + (f":ga{micro_batches}" if micro_batches > 1 else "")
        if side == "preftune-replay" and (source not in sides or sides.index(source) > sides.index(label)):
            p.error(f"--sides: {label} replays the {source} side's samples, so {source} must come before it")
        if args.prompts % micro_batches:  # before any child loads a model
            p.error(f"--sides: {label}: {args.prompts} prompts a step do not split into {micro_batches} micro-batches")
    if args.child:
        run_child(args)
        return
    results: list[dict[str, Any]] = []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for repeat in range(args.repeats):
        for workload in args.workloads.split(","):
            for side in sides:
                if parse_side(side)[0] == "trl" and WORKLOADS[workload][2] is None:
                    continue
                res = spawn(args, side, workload)
                res["repeat"] = repeat
                results.append(res)
                print(f"# {workload} {side} repeat {repeat}: " + json.dumps(res)[:400], file=sys.stderr, flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                meta = {"argv": sys.argv, "machine": platform.processor() or platform.machine()}
                args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    print(table(results))


if __name__ == "__main__":
    main()
