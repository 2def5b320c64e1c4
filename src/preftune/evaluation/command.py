"""``preftune evaluate``: held-out statistics (docs/methods.md §6) of a saved model, or of a run.

The data are read exactly as ``preftune train`` reads them (the same ``data.*`` settings:
format, columns, labels, pairing, lengths) and validated before any weights load. With
``--run DIR`` everything comes from the run: its last stage's model, the reference that stage
was scored against (the model the stage started from), its held-out pairs (``heldout.jsonl``),
its lengths and its objective's β and averaging — so the numbers are the run's ``eval_after``.

Reads a run folder by its layout (:mod:`preftune.run_layout`) and imports nothing of training.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from preftune.data import Batcher, TokenizedGroup, load_preference_data, tokenize_examples
from preftune.data.config import DataConfig
from preftune.data.options import check_prompt_room, data_options, resolve_source
from preftune.errors import PreftuneError
from preftune.evaluation.names import ordered
from preftune.evaluation.statistical import MetricSummary, pair_values, summarise
from preftune.files import write_json_atomic
from preftune.modeling import (
    AdapterDisabledReference,
    ModelReference,
    load_model,
    load_tokenizer,
    sequence_logprobs,
)
from preftune.modeling.attention import attention_length
from preftune.objectives import build
from preftune.run_layout import CONFIG_FILE, DONE_FILE, HELD_OUT_FILE, stage_dirs


def _adapter_base(folder: Path) -> str | None:
    adapter_config = folder / "adapter_config.json"
    if not adapter_config.is_file():
        return None
    base = json.loads(adapter_config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise PreftuneError(f"{adapter_config} does not name its base model (base_model_name_or_path)")
    return base


def evaluate_model(
    model: str,
    reference: str | None,
    data: str,
    *,
    data_config: DataConfig | None = None,
    max_length: int | None = None,
    limit: int | None = None,
    skip_invalid: bool | None = None,
    out: Path | None = None,
    batch_size: int = 16,
    beta: float = 0.1,
    average: bool = False,
    logit_chunk: int = 1024,
) -> dict[str, MetricSummary]:
    """Held-out statistics (docs/methods.md §6) of ``model`` against a reference on preference pairs.

    ``model``: a built-in name, a model folder or a LoRA adapter folder (its base is loaded too).
    The reference is ``reference`` when given, else an adapter's base (adapters disabled), else
    the model itself (then margin and accuracy carry no information: h = 0). ``data_config``
    reads ``data`` as ``preftune train`` would (``max_length``/``skip_invalid`` override it).
    Prints a table of mean ± standard error on stdout, writes it as JSON to ``out``, returns it.
    """
    d = replace(data_config or DataConfig(), train=data, eval=None)
    d.max_length = max_length if max_length is not None else d.max_length
    d.skip_invalid = skip_invalid if skip_invalid is not None else d.skip_invalid
    _check_numbers(d, limit, batch_size)
    tokenizer, base_name, pairs, source = _tokenized_pairs(model, data, d, limit)

    policy, ref_fn, ref_name, size = _scorers(model, base_name, reference, logit_chunk)
    batcher = Batcher(tokenizer.pad_token_id, d.layout, attention_length=size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    values = pair_values(
        policy, ref_fn, pairs, torch.arange(len(pairs)), batcher, batch_size, device, beta, average, progress=True
    )
    metrics = summarise({k: torch.tensor(v) for k, v in values.items()})
    names = ordered(metrics)
    print(_table(model, ref_name, f"{source}: {len(pairs)} pairs", names, metrics))
    if out is not None:
        write_json_atomic(
            Path(out),
            {
                "model": model,
                "reference": ref_name,
                "data": data,
                "pairs": len(pairs),
                "beta": beta,
                "average": average,
                "metrics": {n: metrics[n].to_dict() for n in names},
            },
        )
    return metrics


def _tokenized_pairs(
    model: str, data: str, d: DataConfig, limit: int | None
) -> tuple[Any, str | None, list[TokenizedGroup], str]:
    """(tokenizer, the adapter's base or None, the first ``limit`` pairs tokenized, the data's name), checked.

    The data are read first: a bad file is refused before any tokenizer or weights are loaded.
    """
    examples, summary = load_preference_data(resolve_source(data), **data_options(d))
    examples = examples[:limit] if limit is not None else examples
    folder = Path(model)
    base_name = _adapter_base(folder) if folder.is_dir() else None
    has_tokenizer = (folder / "tokenizer_config.json").is_file() or not folder.is_dir()
    tokenizer = load_tokenizer(model if has_tokenizer or base_name is None else base_name)
    max_prompt = d.max_prompt_length if d.max_prompt_length is not None else d.max_length // 2
    pairs, tok_summary = tokenize_examples(examples, tokenizer, d.max_length, max_prompt, summary=summary)
    check_prompt_room(examples, tokenizer, d.max_length, tok_summary)
    return tokenizer, base_name, pairs, tok_summary.source


def _check_numbers(d: DataConfig, limit: int | None, batch_size: int) -> None:
    if d.max_length < 2:
        raise PreftuneError(f"data.max_length must be at least 2, got {d.max_length}")
    if limit is not None and limit < 1:
        raise PreftuneError(f"limit must be at least 1, got {limit}")
    if batch_size < 1:
        raise PreftuneError(f"eval.batch_size must be at least 1, got {batch_size}")


def _scorers(model: str, base_name: str | None, reference: str | None, chunk: int) -> tuple[Any, Any, str, int]:
    """(policy log-probs, reference log-probs, how the reference is named, the model's attention length)."""
    from peft import PeftModel

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if base_name is not None:
        policy_model = PeftModel.from_pretrained(load_model(base_name, dtype="float32"), model).to(device).eval()
    else:
        policy_model = load_model(model, dtype="float32", device=device)

    def policy(batch):
        return sequence_logprobs(policy_model, batch, with_tokens=False, chunk_size=chunk)

    if reference is not None:
        ref_fn: Any = ModelReference(load_model(reference, dtype="float32", device=device), chunk_size=chunk)
        ref_name = reference
    elif base_name is not None:
        ref_fn, ref_name = AdapterDisabledReference(policy_model, chunk_size=chunk), f"{base_name} (adapter off)"
    else:
        ref_fn, ref_name = policy, f"{model} itself (h = 0: margin and accuracy say nothing)"
    return policy, ref_fn, ref_name, attention_length(policy_model)


def _table(model: str, ref_name: str, data: str, names: list[str], metrics: dict[str, MetricSummary]) -> str:
    width = max(len(n) for n in names)
    lines = [f"model: {model}", f"reference: {ref_name}", f"data: {data}", ""]
    lines += [f"{'metric':<{width}}  mean ± stderr (n)"]
    for n in names:
        m = metrics[n]
        shown = f"{m.mean:.4f} ± {m.stderr:.4f}" if m.stderr == m.stderr else f"{m.mean:.4f}"  # no stderr: NaN
        lines.append(f"{n:<{width}}  {shown} ({m.count})")
    return "\n".join(lines)


def evaluate_run(run_dir: Path, *, out: Path | None = None, batch_size: int | None = None) -> dict[str, MetricSummary]:
    """Score a finished run's last model on the run's own held-out pairs, as the run scored it."""
    run_dir = Path(run_dir)
    saved_file, held_file = run_dir / CONFIG_FILE, run_dir / HELD_OUT_FILE
    if not saved_file.is_file():
        raise PreftuneError(f"run={run_dir}: no {CONFIG_FILE}; is it a preftune train output folder?")
    if not held_file.is_file():
        raise PreftuneError(f"run={run_dir}: no {HELD_OUT_FILE} (the run held out no pairs, or predates saving them)")
    saved = json.loads(saved_file.read_text(encoding="utf-8"))
    stages = saved.get("stages") or [{"name": "train", "objective": saved["objective"]}]
    dirs = stage_dirs(run_dir, [s["name"] for s in stages])
    if not (dirs[-1] / DONE_FILE).is_file():
        raise PreftuneError(f"run={run_dir}: the last stage '{stages[-1]['name']}' has not finished")
    lora = bool(saved["lora"]["enabled"])
    reference = None if lora else (saved["model"]["name"] if len(stages) == 1 else str(dirs[-2] / "model"))
    beta, average = build(stages[-1]["objective"]).margin_settings()
    data = replace(
        DataConfig(), max_length=saved["data"]["max_length"], max_prompt_length=saved["data"]["max_prompt_length"]
    )
    return evaluate_model(
        str(dirs[-1] / "model"),
        reference,
        str(held_file),
        data_config=data,
        out=out,
        batch_size=batch_size or saved["eval"]["batch_size"],
        beta=beta if beta is not None else 0.1,
        average=bool(average),
        logit_chunk=saved.get("logit_chunk", 1024),
    )
