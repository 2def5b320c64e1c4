"""``preftune evaluate --generate``: a model's greedy answers against a baseline's, by pairwise judges
(docs/methods.md §6).

    preftune evaluate --generate model.name=out/run/model prompts=bundled:hh-harmless limit=24 \\
        eval.baseline=model:smollm2-135m-instruct eval.judges=[longer,local-debiased:smollm2-135m-instruct]

The prompts are anything ``preftune generate`` reads (a prompt file, MT-Bench's ``turns``, AlpacaEval,
the prompts of preference data). The model answers each greedily (:func:`~preftune.generation.sampling.sample`
with temperature 0); the baseline's answers are

- ``chosen``: the data's chosen response to each prompt (preference data only; the first pair's for a
  prompt that several pairs share; a conversational response is read as its messages' contents);
- ``model:NAME_OR_PATH``: another model's greedy answers, with the same settings (``model:`` the
  starting model of a run gives the win rate of training);
- ``file:PATH``: rows with ``prompt`` and ``completion`` (or ``completions``, the first), as
  ``preftune win-rate`` reads them; every prompt must be there.

Each judge (``eval.judges``, one or several) compares each pair in both orders (:func:`win_scores`); the report
gives the win rate and the length-controlled win rate with bootstrap intervals, the mean lengths, ties
and failed comparisons, and says whether the interval of the win rate excludes 0.5. Everything is
checked before any model loads. ``--out DIR`` gets ``outputs.jsonl`` and ``baseline.jsonl`` (rows that
``preftune win-rate`` reads, the model's with each judge's score) and ``report.json``, written atomically.
When comparisons failed (no verdict: left out of the rates), everything is still reported and
written, and then :class:`~preftune.errors.IncompleteRun` says how many (the CLI's exit 3).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from preftune.errors import IncompleteRun, PreftuneError
from preftune.files import unwritable_reason
from preftune.generation.prompts import Prompt, prompt_key

BASELINES = "chosen | model:NAME_OR_PATH | file:PATH"
OUTPUTS_FILE, BASELINE_FILE, REPORT_FILE = "outputs.jsonl", "baseline.jsonl", "report.json"


@dataclass(frozen=True)
class Baseline:
    """A parsed ``eval.baseline``: its kind (``chosen``, ``model``, ``file``) and its value."""

    kind: str
    value: str = ""

    @classmethod
    def parse(cls, spec: str) -> Baseline:
        if spec == "chosen":
            return cls("chosen")
        kind, sep, value = spec.partition(":")
        if sep and kind in ("model", "file"):
            if not value.strip():
                raise PreftuneError(f"eval.baseline={spec}: name the {'model' if kind == 'model' else 'file'}")
            if kind == "file" and not Path(value).is_file():
                raise PreftuneError(f"eval.baseline={spec}: no such file")
            if kind == "model":
                from preftune.modeling.loading import _looks_like_path

                if _looks_like_path(value) and not Path(value).expanduser().is_dir():
                    raise PreftuneError(f"eval.baseline={spec}: no such model folder")
            return cls(kind, value)
        raise PreftuneError(f"eval.baseline must be {BASELINES}, not '{spec}'")

    def __str__(self) -> str:
        return self.kind if self.kind == "chosen" else f"{self.kind}:{self.value}"


def response_text(response: Any) -> str:
    """A response as text: a string as is, a message list as its messages' contents."""
    if isinstance(response, str):
        return response.strip()
    return "\n\n".join(str(m.get("content", "")) for m in response).strip()


def chosen_responses(source: str, prompts: Sequence[Prompt]) -> list[str]:
    """The data's chosen response to each prompt (the first pair's), or one error when ``source`` has none."""
    from preftune.data.load import load_preference_data
    from preftune.data.options import resolve_source

    try:
        examples, _ = load_preference_data(resolve_source(source))
    except PreftuneError as err:
        raise PreftuneError(
            f"eval.baseline=chosen needs preference data (chosen/rejected) in prompts=: {err}"
        ) from None
    chosen: dict[str, str] = {}
    for example in examples:
        chosen.setdefault(prompt_key(example.prompt), response_text(example.chosen))
    missing = [p for p in prompts if prompt_key(p) not in chosen]
    if missing:
        raise PreftuneError(f"eval.baseline=chosen: {len(missing)} prompts of prompts={source} have no chosen response")
    return [chosen[prompt_key(p)] for p in prompts]


def file_responses(path: Path, prompts: Sequence[Prompt]) -> list[str]:
    from preftune.evaluation.completions import read_completions

    rows = read_completions(path, "eval.baseline=file:")
    missing = [p for p in prompts if prompt_key(p) not in rows]
    if missing:
        raise PreftuneError(
            f"eval.baseline=file:{path}: {len(missing)} of {len(prompts)} prompts are not in it, "
            f"e.g. {prompt_key(missing[0])[:80]}"
        )
    return [rows[prompt_key(p)][1] for p in prompts]


def load_policy(name: str, device: Any) -> tuple[Any, Any]:
    """(model, tokenizer) of a model name, model folder or LoRA adapter folder (its base loaded too)."""
    from preftune.evaluation.command import _adapter_base
    from preftune.modeling import load_model, load_tokenizer

    folder = Path(name)
    base = _adapter_base(folder) if folder.is_dir() else None
    if base is None:
        return load_model(name, dtype="float32", device=device), load_tokenizer(name)
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_model(base, dtype="float32"), name).to(device).eval()
    has_tokenizer = (folder / "tokenizer_config.json").is_file()
    return model, load_tokenizer(name if has_tokenizer else base)


def greedy_answers(
    name: str, prompts: Sequence[Prompt], max_new_tokens: int, batch_size: int, progress: bool = False
) -> list[str]:
    """A model's greedy answer to each prompt, in the prompts' order (loaded, answered, released);
    ``progress``: a bar over the batches.

    The prompts are answered shortest first, so a batch pads its prompts to similar lengths: on 40 HH-RLHF
    prompts of 37-315 tokens this cut the prompt pass's padding enough to answer in 0.89x the time (SmolLM2,
    float32, batches of 8). Greedy decoding draws nothing, so the order changes no answer beyond rounding.
    """
    import torch

    from preftune.generation.prompts import check_tokenizer, encode_prompt
    from preftune.generation.sampling import SamplingConfig, sample

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer = load_policy(name, device)
    check_tokenizer(tokenizer, list(prompts))
    ids = [encode_prompt(tokenizer, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    config = SamplingConfig(n=1, temperature=0.0, max_new_tokens=max_new_tokens, batch_size=batch_size)
    answered = sample(model, tokenizer, [ids[i] for i in order], config, progress=progress)
    answers = [""] * len(ids)
    for index, answer in zip(order, answered, strict=True):
        answers[index] = answer.text
    del model
    return answers


def significance(rate: float, low: float, high: float) -> str:
    """A plain sentence: does the interval of the win rate exclude 0.5?"""
    if math.isnan(rate) or math.isnan(low):
        return "no interval: nothing was compared"
    if low > 0.5:
        return f"significantly above 0.5 (the 95% interval [{low:.3f}, {high:.3f}] excludes 0.5): the model wins"
    if high < 0.5:
        return f"significantly below 0.5 (the 95% interval [{low:.3f}, {high:.3f}] excludes 0.5): the baseline wins"
    return f"not significantly different from 0.5 (the 95% interval [{low:.3f}, {high:.3f}] contains 0.5)"


def check_inputs(
    model: str,
    prompts: str,
    judges: Sequence[str],
    baseline: str,
    limit: int | None,
    max_new_tokens: int,
    batch_size: int,
    out: Path | None,
    bootstrap: int = 0,
    lc_bootstrap: int = 0,
) -> tuple[Baseline, list[Prompt], str]:
    """Everything a run needs, checked before any model loads: (baseline, prompts, the prompts' description)."""
    from preftune.generation.prompts import load_prompts

    if not judges:
        raise PreftuneError("--generate needs eval.judges (e.g. eval.judges=[longer])")
    for flag, value in (("limit", limit), ("eval.max_new_tokens", max_new_tokens), ("eval.batch_size", batch_size)):
        if value is not None and value < 1:
            raise PreftuneError(f"{flag} must be at least 1, not {value}")
    for flag, value in (("eval.bootstrap", bootstrap), ("eval.lc_bootstrap", lc_bootstrap)):
        if value < 0:
            raise PreftuneError(f"{flag} must be at least 0, not {value}")
    if out is not None:
        _check_out_folder(out)
    parsed = Baseline.parse(baseline)
    folder = Path(model).expanduser()
    from preftune.modeling.loading import _looks_like_path

    if _looks_like_path(model) and not folder.is_dir():
        raise PreftuneError(f"model.name={model}: no such model folder")
    for spec in judges:
        check_judge_spec(spec)
    found = load_prompts(prompts, limit)
    return parsed, found.prompts, str(found)


def _check_out_folder(out: Path) -> None:
    """``out`` a folder that exists or can be made, so that no traceback comes after the generation."""
    if out.exists() and not out.is_dir():
        raise PreftuneError(f"out={out} is a file; give a folder")
    if reason := unwritable_reason(out):
        raise PreftuneError(f"out={out}: no folder can be made there ({reason})")


def check_judge_spec(spec: str, flag: str = "eval.judges:") -> None:
    """A judge spec's form (the judge itself is built later: some load a tokenizer or a model)."""
    from preftune.judging.specs import JUDGES

    simple = spec in ("longer", "shorter", "random") or spec.startswith("random:")
    prefixed = spec.startswith(("function:", "local:", "local-debiased:", "api:", "rm:"))
    if not (simple or prefixed) or (prefixed and not spec.partition(":")[2]):
        raise PreftuneError(f"{flag} {spec}: unknown or incomplete judge (expected {JUDGES})")
    if spec.startswith("rm:") and not Path(spec.removeprefix("rm:")).is_dir():
        raise PreftuneError(f"{flag} {spec}: no such reward-model folder")


def evaluate_generation(
    model: str,
    prompts: str,
    judges: Sequence[str],
    baseline: str = "chosen",
    *,
    limit: int | None = None,
    max_new_tokens: int = 128,
    batch_size: int = 16,
    out: Path | None = None,
    bootstrap: int = 2000,
    lc_bootstrap: int = 200,
    seed: int = 0,
    say: Any = print,
) -> dict[str, Any]:
    """Generate, judge, report (see the module docstring); returns the report (as written to ``out``)."""
    from preftune.judging.specs import make_judge

    parsed, prompt_list, described = check_inputs(
        model, prompts, judges, baseline, limit, max_new_tokens, batch_size, out, bootstrap, lc_bootstrap
    )
    base_texts = _given_baseline(parsed, prompts, prompt_list)
    say(f"prompts: {described}; baseline: {parsed}")
    built = [make_judge(spec) for spec in judges]  # before any weights load: a bad api: setting stops here
    outputs = greedy_answers(model, prompt_list, max_new_tokens, batch_size, progress=True)
    if base_texts is None:
        base_texts = greedy_answers(parsed.value, prompt_list, max_new_tokens, batch_size, progress=True)
    judged, all_scores = _judge_all(
        judges,
        built,
        prompt_list,
        outputs,
        base_texts,
        bootstrap=bootstrap,
        lc_bootstrap=lc_bootstrap,
        seed=seed,
        say=say,
    )
    report: dict[str, Any] = {
        "model": model,
        "prompts": prompts,
        "n_prompts": len(prompt_list),
        "baseline": str(parsed),
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "judges": judged,
    }
    if out is not None:
        _write(out, report, prompt_list, outputs, base_texts, all_scores)
        say(f"written: {out / OUTPUTS_FILE}, {out / BASELINE_FILE}, {out / REPORT_FILE}")
    _refuse_failed(judged, len(prompt_list) * len(judges))
    return report


def _given_baseline(parsed: Baseline, prompts: str, prompt_list: Sequence[Prompt]) -> list[str] | None:
    """The baseline's answers when they are read, not generated (``chosen``, ``file:``); None for ``model:``.

    Read before any model loads, so that a prompt they lack is refused first.
    """
    if parsed.kind == "chosen":
        return chosen_responses(prompts, prompt_list)
    if parsed.kind == "file":
        return file_responses(Path(parsed.value), prompt_list)
    return None


def _judge_all(
    judges: Sequence[str],
    built: Sequence[Any],
    prompts: Sequence[Prompt],
    outputs: Sequence[str],
    base_texts: Sequence[str],
    *,
    bootstrap: int,
    lc_bootstrap: int,
    seed: int,
    say: Any,
) -> tuple[list[dict[str, Any]], dict[str, list[float]]]:
    """Each judge's entry of the report (its summary said as it is done), and each judge's scores."""
    from preftune.evaluation.generative import length_controlled_win_rate, win_rate, win_scores
    from preftune.files import strict_json
    from preftune.judging.labellers import prompt_text

    texts = [prompt_text(p) for p in prompts]
    lengths, base_lengths = [len(t) for t in outputs], [len(t) for t in base_texts]
    judged: list[dict[str, Any]] = []
    all_scores: dict[str, list[float]] = {}
    for spec, judge in zip(judges, built, strict=True):
        scores = win_scores(judge, texts, outputs, base_texts, progress=True)
        all_scores[spec] = scores
        raw = win_rate(scores, lengths, base_lengths, bootstrap=bootstrap, seed=seed)
        lc = length_controlled_win_rate(scores, lengths, base_lengths, bootstrap=lc_bootstrap, seed=seed)
        verdict = significance(raw.win_rate, raw.ci_low, raw.ci_high)
        say(_summary(spec, raw, lc, verdict))
        judged.append(
            {
                "judge": spec,
                "identity": judge.identity(),
                "win_rate": strict_json(vars(raw)),
                "length_controlled": strict_json(vars(lc)),
                "significance": verdict,
            }
        )
    return judged, all_scores


def _refuse_failed(judged: Sequence[dict[str, Any]], total: int) -> None:
    """:class:`IncompleteRun` when comparisons failed; raised last, so the report is said and written first."""
    failed = sum(entry["win_rate"]["failed"] for entry in judged)
    if failed:
        from preftune.judging.store import failed_comparisons

        raise IncompleteRun(failed_comparisons(failed, total, "the win rates", None, store_flag=None))


def _write(
    out: Path,
    report: dict[str, Any],
    prompts: Sequence[Prompt],
    outputs: Sequence[str],
    base_texts: Sequence[str],
    all_scores: dict[str, list[float]],
) -> None:
    """``outputs.jsonl`` (with each judge's score), ``baseline.jsonl`` and ``report.json`` in ``out``, atomically."""
    from preftune.files import strict_json, write_atomic, write_json_atomic

    out.mkdir(parents=True, exist_ok=True)
    rows = [
        json.dumps(
            {
                "prompt": p,
                "completion": o,
                "model": report["model"],
                "scores": {j: strict_json(s[i]) for j, s in all_scores.items()},
            },
            ensure_ascii=False,
        )
        for i, (p, o) in enumerate(zip(prompts, outputs, strict=True))
    ]
    base_rows = [
        json.dumps({"prompt": p, "completion": b, "baseline": report["baseline"]}, ensure_ascii=False)
        for p, b in zip(prompts, base_texts, strict=True)
    ]
    write_atomic(out / OUTPUTS_FILE, "".join(r + "\n" for r in rows))
    write_atomic(out / BASELINE_FILE, "".join(r + "\n" for r in base_rows))
    write_json_atomic(out / REPORT_FILE, report)


def _summary(spec: str, raw: Any, lc: Any, verdict: str) -> str:
    return "\n".join(
        [
            f"judge {spec}:",
            f"  win rate     {raw.win_rate:.3f} [{raw.ci_low:.3f}, {raw.ci_high:.3f}]"
            "  (95% bootstrap; ties count half)",
            f"  LC win rate  {lc.describe()}  (AlpacaEval 2, minimal GLM)",
            f"  n {raw.n}: {raw.wins} wins, {raw.ties} ties, {raw.losses} losses; {raw.failed} failed",
            f"  mean length  {raw.mean_length:.1f} characters (baseline {raw.baseline_mean_length:.1f})",
            f"  the win rate is {verdict}",
        ]
    )
