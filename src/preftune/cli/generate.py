"""``preftune generate``: sample N completions per prompt into JSON Lines that ``preftune rank`` reads.

Exit 0 when every prompt has N completions in the output; 3 (:data:`~preftune.errors.EXIT_INCOMPLETE`)
when some completion stayed empty after its redraws (its row is written, but ``preftune rank``
refuses it)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from preftune.cli.keys import Setting, Settings, add_settings
from preftune.cli.outputs import check_output_file
from preftune.errors import IncompleteRun, PreftuneError

if TYPE_CHECKING:
    from preftune.generation.command import GenerateReport, Sampler
    from preftune.generation.sampling import SamplingConfig


SETTINGS = Settings(
    "generate",
    (
        Setting("prompts", flag="--input", required=True, dest="input"),
        Setting("model.name", "smollm2-135m-instruct", "--model", dest="model"),
        Setting("sampling.n", 4, "--n", dest="n"),
        Setting("out", flag="--out", required=True, help="JSON Lines output (prompt, completions, ...)"),
        Setting("sampling.temperature", 0.7, "--temperature"),
        Setting("sampling.top_p", 1.0, "--top-p"),
        Setting("sampling.top_k", 0, "--top-k"),
        Setting("sampling.max_new_tokens", 128, "--max-new-tokens"),
        Setting("sampling.batch_size", 16, "--batch-size"),
        Setting("seed", 0, "--seed", help="the sampling seed"),
        Setting("limit", flag="--limit", help="only the first N distinct prompts"),
        Setting("model.device", flag="--device", dest="device"),
        Setting(
            "sampling.backend",
            "auto",
            "--backend",
            help="who samples: vllm (installed, CUDA GPU), hf "
            "(transformers), auto: vllm when it can run; a resume keeps the backend the output began with",
        ),
    ),
)


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "generate",
        help="sample N completions per prompt from a model, for preftune rank (resumable)",
        description=(
            "Reads prompts (a 'prompt' column, MT-Bench 'turns' (first turn), AlpacaEval 'instruction', or the "
            "prompts of preference data such as bundled:hh-harmless), samples N completions each and appends "
            "one row per prompt to OUT as soon as it is done. Rerun the same command after a kill to resume: "
            "prompts already in OUT are skipped; other settings are refused."
        ),
        epilog="example: preftune generate prompts=mt-bench-questions.jsonl model.name=smollm2-135m-instruct "
        "sampling.n=4 out=generated.jsonl && preftune rank input=generated.jsonl out=ranked.jsonl",
    )
    add_settings(parser, SETTINGS)
    parser.set_defaults(run=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from preftune.generation.command import Settings, generate_file, open_output
    from preftune.generation.prompts import load_prompts, prompt_key
    from preftune.generation.vllm_backend import resolve_backend

    # everything checked before a model loads
    config = _sampling_config(args)
    check_output_file(args.out, "out")
    backend = resolve_backend(args.backend, args.model, args.device)
    prompts = load_prompts(args.input, args.limit)
    console = Console(stderr=True, soft_wrap=True)
    console.print(str(prompts), highlight=False)
    done = open_output(args.out, Settings.of(args.model, config, backend))
    left = sum(1 for p in prompts.prompts if prompt_key(p) not in done)
    if not left:
        console.print(f"all {len(prompts.prompts)} prompts are already in {args.out}", highlight=False)
        return 0
    if config.n < 2:
        console.print("note: preftune rank needs at least 2 completions per prompt", highlight=False)

    from preftune.progress import StepProgress

    model, tokenizer, sampler = _load_sampler(args, backend, console)
    total, start = len(prompts.prompts), len(prompts.prompts) - left
    with StepProgress(total, start, description="generate", console=console) as bar:
        report = generate_file(
            model,
            tokenizer,
            prompts.prompts,
            args.out,
            config,
            model_name=args.model,
            done=done,
            progress=lambda: bar.advance({}),
            sampler=sampler,
            backend=backend,
        )
    console.print(str(report), highlight=False)
    _refuse_empty(report, args.out)
    return 0


def _sampling_config(args: argparse.Namespace) -> SamplingConfig:
    """The sampling settings of ``args``, checked (with ``limit``) before anything is read or loaded."""
    from preftune.generation.sampling import SamplingConfig

    if not math.isfinite(args.temperature):
        raise PreftuneError(f"sampling.temperature must be a finite number ≥ 0, not {args.temperature}")
    config = SamplingConfig(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    if args.limit is not None and args.limit < 1:
        raise PreftuneError(f"limit must be at least 1, not {args.limit}")
    return config


def _load_sampler(args: argparse.Namespace, backend: str, console: Console) -> tuple[Any, Any, Sampler]:
    """(model, tokenizer, sampler) for ``backend``: a vLLM engine with ``sample_vllm``, or a model with ``sample``."""
    import torch

    from preftune.generation.sampling import sample
    from preftune.modeling import load_model, load_tokenizer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = load_tokenizer(args.model)
    if backend == "vllm":
        from preftune.generation.vllm_backend import VllmSampler, sample_vllm

        console.print("sampling with vLLM", highlight=False)
        return VllmSampler(args.model, tokenizer=tokenizer, seed=args.seed), tokenizer, sample_vllm
    return load_model(args.model, device=device), tokenizer, sample


def _refuse_empty(report: GenerateReport, out: Path) -> None:
    """:class:`IncompleteRun` (exit 3) when completions stayed empty: their rows are written, rank refuses them."""
    from preftune.generation.command import REDRAWS

    if report.empty:
        raise IncompleteRun(
            f"{report.empty} completions stayed empty after {REDRAWS} redraws; their rows are in "
            f"{out}, but preftune rank refuses them: drop those rows, or sample those prompts "
            "again with another seed=N into another out=FILE"
        )
