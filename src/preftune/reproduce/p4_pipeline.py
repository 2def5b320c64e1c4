"""P4's claim (d), the whole pipeline (Chen et al. 2024, *Towards Improved Preference Optimization Pipeline:
from Data Generation to Budget-Controlled Regularization*; docs/methods.md §5), against the original pairs.

The paper's pipeline: sample N completions per prompt from the starting model, rank them with a pairwise
judge by iterative pairwise ranking (IPR), take best against worst, and train DPO + BCR on those pairs. It
reports that this beats the same training on the data's original (human) pairs. We run it with the project's
own commands' code:

- **prompts**: those of P1's training pairs at the scale (:data:`preftune.reproduce.p1.SCALES`, read as the
  trainer reads them: :func:`preftune.reproduce.p1_runs.read_pairs`, the first ``data.train_size`` pairs);
- **generate** (``preftune generate``'s :func:`~preftune.generation.command.generate_file` with the
  transformers sampler :func:`~preftune.generation.sampling.sample`): N completions per prompt from the
  starting model at the scale's temperature, length limit and seed; cached under
  ``$PREFTUNE_CACHE/reproduce/generated`` keyed by the model, the prompts and the sampling settings;
- **rank** (``preftune rank``'s :func:`~preftune.judging.rank_file.rank_rows` and
  :func:`~preftune.judging.rank_file.write_outputs`): IPR with the scale's judge (``longer`` offline: the paper
  used GPT-4; see the report), best against worst; a prompt whose best and worst the judge cannot tell apart
  gives no pair (docs/methods.md §5);
- **train** (:func:`preftune.reproduce.p1_runs.train_variant`): ``dpo+bcr`` (default δ) on (i) the pipeline's
  pairs and (ii) the original pairs of the same prompts, the same steps, seeds and held-out pairs (P1's);
- **judge**: the gold reward model's scores of every model's greedy answers to P1's held-out prompts
  (:func:`preftune.reproduce.answers.gold_scores`), compared by :mod:`preftune.reproduce.p4_pipeline_report`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from preftune.data.examples import Origin, PreferenceExample
from preftune.data.split import canonical
from preftune.errors import PreftuneError
from preftune.files import write_atomic
from preftune.modeling.cache import cache_root
from preftune.reproduce.answers import distinct_prompts, gold_scores, start_answers
from preftune.reproduce.gold import GoldEvaluator, check_disjoint
from preftune.reproduce.p1 import SCALES as P1_SCALES
from preftune.reproduce.p1_runs import Run, read_pairs, train_variant

Say = Callable[[str], Any]
Scorer = Callable[[list[Any], list[str]], list[float]]
PIPELINE, ORIGINAL = "pipeline", "original"


@dataclass(frozen=True)
class PipelineSettings:
    """How big P4 (d) is.

    Attributes:
        training: the runs' settings by :class:`~preftune.run.config.RunConfig` section (P1's at the scale); its
            ``data`` names the prompts (the first ``train_size`` training pairs) and the held-out pairs.
        n: completions sampled per prompt.
        max_new_tokens: their length limit.
        temperature: the sampling temperature.
        sample_seed: the sampling seed.
        batch_size: sequences per ``generate`` call.
        judge: the ranking judge, as ``preftune rank judge=`` names it (``longer``; a GPU scale can name a model:
            ``local:<model>``, ``api:...``). Never the gold model.
        objective: what both runs train.
        seeds: the optimiser seeds each run trains with.
        prompts: held-out prompts every model answers (greedy).
        answer_tokens: the answers' length limit.
    """

    training: dict[str, dict[str, Any]]
    n: int = 4
    max_new_tokens: int = 64
    temperature: float = 1.0
    sample_seed: int = 0
    batch_size: int = 16
    judge: str = "longer"
    objective: str = "dpo+bcr"
    seeds: tuple[int, ...] = (0, 1)
    prompts: int = 40
    answer_tokens: int = 48


_TEST = P1_SCALES["test"].training
# the tiny model's tokenizer makes the first few prompts longer than half of P1's 96 tokens, and a run whose every
# prompt is cut is refused: here the few pairs are all there is
_TEST = {**_TEST, "data": {**_TEST["data"], "max_length": 512}}

PIPELINE_SCALES = {
    # seconds on the tiny random model: every path, no statistics
    "test": PipelineSettings(_TEST, n=2, max_new_tokens=8, seeds=(0,), prompts=2, answer_tokens=4, batch_size=8),
    # two CPU cores, ~9 min: 128 prompts x 4 completions of <= 64 tokens (~3 min), 2 x 2 runs of 32 steps with
    # their answers (~1.3 min each); P1's held-out prompts and answer length, so the start's answers are shared
    "small": PipelineSettings(P1_SCALES["small"].training, seeds=(0, 1), prompts=40, answer_tokens=48),
    # one GPU, never run here: every training prompt of P1's full scale
    "full": PipelineSettings(
        P1_SCALES["full"].training, max_new_tokens=128, seeds=(0, 1, 2), prompts=100, answer_tokens=128
    ),
}


@dataclass
class PipelineStudy:
    """What (d) measured: the generation, the ranking, both runs per seed and their gold scores."""

    settings: PipelineSettings
    prompts: list[Any]
    start: list[str]
    runs: dict[str, list[Run]]
    scores: dict[str, Any]
    generation: dict[str, Any]
    ranking: dict[str, Any]
    original: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain numbers (and the answers) for ``results.json``."""
        return {
            "settings": asdict(self.settings),
            "generation": self.generation,
            "ranking": self.ranking,
            "original_pairs": self.original,
            "start": {"answers": self.start, "gold_scores": self.scores["start"]},
            "runs": {
                name: [
                    {"seed": r.seed, "metrics": r.metrics, "seconds": r.seconds, "answers": r.answers} for r in seeds
                ]
                for name, seeds in self.runs.items()
            },
            "gold_scores": {name: self.scores[name] for name in self.runs},
            "seconds": self.seconds,
        }


def text_of(response: Any) -> str:
    """A response as text: a string as is, messages' contents joined."""
    return response if isinstance(response, str) else "\n\n".join(m["content"] for m in response)


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def pair_lengths(pairs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Count and mean lengths (characters) of the chosen and rejected responses of pair rows."""
    return {
        "pairs": len(pairs),
        "chosen_mean_length": _mean([len(text_of(p["chosen"])) for p in pairs]),
        "rejected_mean_length": _mean([len(text_of(p["rejected"])) for p in pairs]),
    }


def write_pairs(path: Path, pairs: Sequence[PreferenceExample]) -> list[dict[str, Any]]:
    """Pairs as JSON lines in TRL's format (``prompt``, ``chosen``, ``rejected``), as ``preftune train`` reads."""
    rows = [{"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected} for e in pairs]
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return rows


def generated_path(model: str, prompts: Sequence[Any], config: Any, cache: Path | None) -> Path:
    """The cached completions' file: a hash of the model, the prompts and the sampling settings."""
    key = hashlib.sha256(canonical([model, list(prompts), asdict(config), "hf"]).encode("utf-8")).hexdigest()[:20]
    return (cache or cache_root() / "reproduce" / "generated") / f"{key}.jsonl"


def generate_completions(
    model: str, prompts: Sequence[Any], settings: PipelineSettings, cache: Path | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``settings.n`` sampled completions per prompt from ``model``, as ``preftune generate`` writes them (one row
    per prompt, in order), from the cache when every prompt is there (a killed run resumes); and what it did."""
    from preftune.generation.command import Settings, generate_file, open_output
    from preftune.generation.prompts import prompt_key
    from preftune.generation.sampling import SamplingConfig

    config = SamplingConfig(
        n=settings.n,
        temperature=settings.temperature,
        max_new_tokens=settings.max_new_tokens,
        batch_size=settings.batch_size,
        seed=settings.sample_seed,
    )
    path = generated_path(model, prompts, config, cache)
    path.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    done = open_output(path, Settings.of(model, config))
    cached = all(prompt_key(p) in done for p in prompts)
    if not cached:
        import torch

        from preftune.generation.sampling import sample
        from preftune.modeling import load_model, load_tokenizer

        device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer, policy = load_tokenizer(model), load_model(model, device=device)
        generate_file(policy, tokenizer, list(prompts), path, config, model_name=model, done=done, sampler=sample)
        del policy
    rows = {prompt_key(r["prompt"]): r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    ordered = [rows[prompt_key(p)] for p in prompts]
    completions = [c for r in ordered for c in r["completions"]]
    finished = [f for r in ordered for f in r["finished"]]
    info = {
        "prompts": len(ordered),
        "completions": len(completions),
        "finished": sum(finished) / max(len(finished), 1),
        "mean_length": _mean([len(c) for c in completions]),
        "cached": cached,
        "file": str(path),
        "seconds": time.perf_counter() - began,
    }
    return ordered, info


def rank_pairs(rows: Sequence[Mapping[str, Any]], judge: str, pairs_out: Path) -> dict[str, Any]:
    """Rank each row's completions by IPR with ``judge`` (``preftune rank``'s code, no verdict store) and write
    the best-vs-worst pairs to ``pairs_out``; rows with an empty completion are left out (rank refuses them)."""
    from preftune.judging.rank_file import Candidates, rank_rows, write_outputs
    from preftune.judging.specs import make_judge

    kept = [r for r in rows if all(text_of(c).strip() for c in r["completions"])]
    candidates = [
        Candidates(r["prompt"], list(r["completions"]), Origin("generated", i + 1)) for i, r in enumerate(kept)
    ]
    if not candidates:
        raise PreftuneError("P4 (d): every prompt has an empty completion; nothing to rank")
    report = rank_rows(candidates, make_judge(judge), method="ipr")
    write_outputs(candidates, report, pairs_out.with_name(pairs_out.stem + "-ranked.jsonl"), pairs_out, "best_vs_worst")
    pairs = [json.loads(line) for line in pairs_out.read_text(encoding="utf-8").splitlines()]
    undecided = sum(not d for d in report.decided)
    return {
        "judge": judge,
        "prompts": len(rows),
        "left_out_empty": len(rows) - len(kept),
        "comparisons": report.comparisons,
        "judge_calls": report.judge_calls,
        "undecided": undecided,
        **pair_lengths(pairs),
    }


def with_data(training: Mapping[str, Any], train: Path, held_out: Path) -> dict[str, Any]:
    """The scale's training settings reading every pair of ``train`` and holding out ``held_out``'s."""
    data = {**training["data"], "train": str(train), "eval": str(held_out), "eval_size": None, "train_size": None}
    return {**training, "data": data}


def train_both(
    settings: PipelineSettings, files: Mapping[str, Path], held_out: Path, prompts: Sequence[Any], say: Say
) -> dict[str, list[Run]]:
    """``settings.objective`` on each pairs file at every seed: ``name -> [Run per seed]`` (answers included)."""
    from preftune.reproduce.workers import map_runs

    cells = [(seed, name) for seed in settings.seeds for name in files]
    with tempfile.TemporaryDirectory(prefix="preftune-p4-pipeline-") as tmp:
        jobs = [
            (
                with_data(settings.training, files[name], held_out),
                settings.objective,
                seed,
                Path(tmp) / f"{name}-{seed}",
                prompts,
                settings.answer_tokens,
            )
            for seed, name in cells
        ]

        def done(index: int, run: Run) -> None:
            say(f"P4 (d): {settings.objective} on the {cells[index][1]} pairs, seed {run.seed}: {run.seconds:.0f} s")

        trained = map_runs(train_variant, jobs, done)
    runs: dict[str, list[Run]] = {name: [] for name in files}
    for (_, name), run in zip(cells, trained, strict=True):
        runs[name].append(replace(run, variant=name))
    return runs


def run_pipeline_study(
    settings: PipelineSettings, gold: GoldEvaluator, score: Scorer, say: Say = print, cache: Path | None = None
) -> PipelineStudy:
    """Generate, rank, train on both sets of pairs, and score every model's answers with the gold ``score``.

    ``cache``: the reproduction's cache folder (the start's answers under ``answers``, the completions under
    ``generated``); None: under ``$PREFTUNE_CACHE/reproduce``."""
    seconds: dict[str, float] = {}
    examples = read_pairs(settings.training)
    train_pairs = list(examples.train[: settings.training["data"].get("train_size")])
    check_disjoint(gold, [*train_pairs, *examples.held_out], "P4's pipeline prompts and held-out pairs")
    model = settings.training["model"]["name"]
    prompts = distinct_prompts(examples.held_out, settings.prompts)
    start = start_answers(model, prompts, settings.answer_tokens, None if cache is None else cache / "answers")
    sources = distinct_prompts(train_pairs, len(train_pairs))
    rows, generation = generate_completions(model, sources, settings, None if cache is None else cache / "generated")
    seconds["generation"] = generation["seconds"]
    say(f"P4 (d): {generation['completions']} completions of {len(sources)} prompts in {seconds['generation']:.0f} s")
    with tempfile.TemporaryDirectory(prefix="preftune-p4-pairs-") as tmp:
        folder = Path(tmp)
        ranking = rank_pairs(rows, settings.judge, folder / "pipeline.jsonl")
        if not ranking["pairs"]:
            raise PreftuneError(f"P4 (d): the {settings.judge} judge separated no prompt's best from its worst")
        original = pair_lengths(write_pairs(folder / "original.jsonl", train_pairs))
        write_pairs(folder / "held-out.jsonl", examples.held_out)
        files = {PIPELINE: folder / "pipeline.jsonl", ORIGINAL: folder / "original.jsonl"}
        clock = time.perf_counter()
        runs = train_both(settings, files, folder / "held-out.jsonl", prompts, say)
        seconds["training"] = time.perf_counter() - clock
    scores = gold_scores(score, prompts, start, runs)
    return PipelineStudy(settings, prompts, start, runs, scores, generation, ranking, original, seconds)
