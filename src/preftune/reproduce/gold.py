"""The gold evaluator of the P1, P2 and P4 reproductions: a reward model the compared models never saw.

A win rate measured with the signal a model was trained on only measures that signal. As AlpacaFarm
(Dubois et al. 2023) and P3 (Tajwar et al. 2024) do, the reproductions judge answers with a **gold
reward model** trained by ``preftune train-rm``'s own code (:func:`preftune.reward.prepare`,
:func:`preftune.reward.train_reward_model`) on human preferences **disjoint** from every pair the
compared models train or are selected on:

- the HH-RLHF harmless-base test pairs of the shared data (``/work/shared/data`` or
  ``$PREFTUNE_GOLD_SOURCE``) whose prompt is not in the bundled subset the experiments train on:
  a pair is dropped when its whole prompt, or its first user turn, matches any excluded prompt;
- split by prompt (every pair of one prompt on one side) into the reward model's training and
  held-out pairs; its held-out accuracy (ties half) is stated with a 95% Wilson interval, and an
  evaluator whose interval does not lie above 0.5 is *at chance*: the claims it would judge cannot be
  tested (:func:`preftune.reproduce.rules.evaluator_usable`).

The OpenAssistant trees are left out on purpose: P4's ranking study uses their human ranks as the
ground truth, so a gold model trained on them would have seen its test [our choice].

The trained model is cached under ``$PREFTUNE_CACHE/reproduce/gold/<key>``, the key a hash of the
gold pairs and the settings, so every experiment (and a second run) shares it; the folder is
published atomically (:func:`preftune.modeling.cache.atomic_directory`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from preftune.data.config import DataConfig
from preftune.data.examples import PreferenceExample
from preftune.data.load import load_preference_data
from preftune.data.split import canonical, prompt_key, split_whole
from preftune.errors import PreftuneError
from preftune.files import write_atomic
from preftune.modeling.cache import atomic_directory, cache_root
from preftune.reproduce.verdicts import Interval, wilson

SOURCE_ENV = "PREFTUNE_GOLD_SOURCE"
DEFAULT_SOURCE = Path("/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz")
TRAIN_FILE, HELD_OUT_FILE, RECORD_FILE = "gold-train.jsonl", "gold-heldout.jsonl", "gold.json"
Say = Callable[[str], Any]


@dataclass(frozen=True)
class GoldSettings:
    """How the gold reward model is trained (``preftune train-rm``'s settings) and how its pairs are cut.

    Attributes:
        model: the base model of the reward model.
        held_out: gold pairs held out for its accuracy (whole prompts at a time).
        train_size: the most training pairs (None: all that are left).
        max_length, epochs, lr, batch_size, lora_rank, lora_last_layers, seed: ``train-rm``'s.
    """

    model: str = "smollm2-135m-instruct"
    held_out: int = 200
    train_size: int | None = None
    max_length: int = 256
    epochs: int = 1
    lr: float = 1e-4
    batch_size: int = 8
    lora_rank: int = 16
    lora_last_layers: int | None = None
    seed: int = 0


GOLD_SCALES = {
    "test": GoldSettings(model="tiny-random", held_out=4, train_size=8, max_length=128),
    # two CPU cores: all ~840 disjoint pairs, LoRA on the last 4 of 30 layers (the backward pass stops there),
    # 192 tokens (most HH-RLHF harmless pairs are shorter), lr 5e-4; 200 held out keep the accuracy's Wilson
    # interval near ±0.07. Timed on an AMD EPYC (Zen 4, 2 cores): 787 s, held-out accuracy 0.580 [0.511, 0.646];
    # 400 pairs at lr 1e-4 stayed at chance (0.445 [0.378, 0.514]) [our choice].
    "small": GoldSettings(held_out=200, max_length=192, lora_last_layers=4, lr=5e-4),
    "full": GoldSettings(held_out=200, max_length=512, epochs=2),
}
"""The gold model of each scale, shared by every paper: the same settings and the same excluded prompts give
the same cache key, so ``preftune reproduce all`` trains it once per scale."""


@dataclass(frozen=True)
class GoldPairs:
    """The gold pairs, split by prompt, and what was left out to keep them disjoint."""

    train: list[PreferenceExample]
    held_out: list[PreferenceExample]
    source: str
    read: int
    excluded: int


@dataclass(frozen=True)
class GoldEvaluator:
    """A trained gold reward model: its folder, held-out accuracy (95% Wilson interval) and pair counts."""

    folder: Path
    accuracy: Interval
    accuracy_before: float
    held_out_pairs: int
    train_pairs: int
    excluded_pairs: int
    source: str
    seconds: float
    cached: bool
    keys: tuple[set[str], set[str]] = field(default_factory=lambda: (set(), set()))  # the gold prompts

    @property
    def above_chance(self) -> bool:
        """Whether the held-out accuracy's whole 95% interval lies above 0.5."""
        return self.accuracy.known and self.accuracy.low > 0.5

    def scorer(self, batch_size: int = 16) -> Any:
        """A :class:`~preftune.reward.RewardModel` on the folder (loads the model)."""
        from preftune.reward import RewardModel

        return RewardModel(self.folder, batch_size=batch_size)

    def to_json(self) -> dict[str, Any]:
        """Plain numbers for ``results.json``."""
        return {
            "folder": str(self.folder),
            "held_out_accuracy": self.accuracy.to_dict(),
            "held_out_accuracy_before_training": self.accuracy_before,
            "held_out_pairs": self.held_out_pairs,
            "train_pairs": self.train_pairs,
            "excluded_pairs": self.excluded_pairs,
            "source": self.source,
            "seconds": self.seconds,
            "above_chance": self.above_chance,
        }


def gold_source() -> Path:
    """The HH-RLHF harmless-base test file: ``$PREFTUNE_GOLD_SOURCE`` or the shared data's."""
    path = Path(os.environ.get(SOURCE_ENV) or DEFAULT_SOURCE)
    if not path.is_file():
        raise PreftuneError(f"gold data {path} not found: set {SOURCE_ENV} to HH-RLHF harmless-base test.jsonl.gz")
    return path


def first_turn(example: PreferenceExample) -> str:
    """The first user turn of a prompt, whitespace-normalised and case-folded (a string prompt: all of it)."""
    prompt = example.prompt
    text = prompt if isinstance(prompt, str) else next((m["content"] for m in prompt if m["role"] == "user"), "")
    return " ".join(text.split()).casefold()


def excluded_keys(examples: Iterable[PreferenceExample]) -> tuple[set[str], set[str]]:
    """The whole-prompt keys and the first-turn texts of ``examples``: what the gold pairs must avoid."""
    items = list(examples)
    return {prompt_key(e) for e in items}, {first_turn(e) for e in items}


def overlaps(example: PreferenceExample, keys: tuple[set[str], set[str]]) -> bool:
    """Whether ``example``'s prompt, or its first user turn, is among ``keys``."""
    return prompt_key(example) in keys[0] or first_turn(example) in keys[1]


def gold_pairs(
    exclude: Iterable[PreferenceExample], held_out: int, seed: int = 0, source: Path | None = None
) -> GoldPairs:
    """The HH-RLHF pairs whose prompts avoid ``exclude``, split by prompt with ``held_out`` pairs held out."""
    path = source or gold_source()
    examples, summary = load_preference_data(path, skip_invalid=True)
    keys = excluded_keys(exclude)
    kept = [e for e in examples if not overlaps(e, keys)]
    if len(kept) <= held_out:
        raise PreftuneError(f"only {len(kept)} gold pairs avoid the excluded prompts; {held_out} are to be held out")
    split = split_whole(kept, held_out, prompt_key, seed)
    return GoldPairs(split.train, split.held_out, str(path), summary.rows_read, len(examples) - len(kept))


def check_disjoint(gold: GoldPairs | GoldEvaluator, used: Iterable[PreferenceExample], what: str) -> None:
    """Refuse ``used`` pairs (an experiment's training or selection data) that share a prompt with the gold pairs.

    Raises:
        PreftuneError: naming the first shared prompt.
    """
    keys = excluded_keys([*gold.train, *gold.held_out]) if isinstance(gold, GoldPairs) else gold.keys
    for example in used:
        if overlaps(example, keys):
            raise PreftuneError(f"{what} shares a prompt with the gold evaluator's pairs: {first_turn(example)[:80]!r}")


def _rows(examples: Sequence[PreferenceExample]) -> str:
    """JSON lines of conversational pairs, as ``preftune train-rm`` reads them."""
    rows = ({"prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected} for e in examples)
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def gold_key(pairs: GoldPairs, settings: GoldSettings) -> str:
    """A hash of the pairs' content and the settings: the cache folder's name."""
    content = canonical({"train": _rows(pairs.train), "held_out": _rows(pairs.held_out), **asdict(settings)})
    return hashlib.sha256(content.encode("utf-8")).hexdigest()[:20]


def gold_dir() -> Path:
    """``<cache root>/reproduce/gold``."""
    return cache_root() / "reproduce" / "gold"


def ensure_gold(
    settings: GoldSettings,
    exclude: Iterable[PreferenceExample],
    say: Say = print,
    source: Path | None = None,
    cache: Path | None = None,
) -> GoldEvaluator:
    """The gold evaluator for ``settings`` avoiding ``exclude``'s prompts: from the cache (``cache``, default
    :func:`gold_dir`), or trained and cached."""
    pairs = gold_pairs(exclude, settings.held_out, settings.seed, source)
    folder = (cache or gold_dir()) / gold_key(pairs, settings)
    if (folder / RECORD_FILE).is_file():
        say(f"gold reward model: cached at {folder}")
        record = json.loads((folder / RECORD_FILE).read_text(encoding="utf-8"))
        return _evaluator(folder, record, excluded_keys([*pairs.train, *pairs.held_out]), cached=True)
    say(
        f"gold reward model: training {settings.model} on {len(pairs.train)} HH-RLHF pairs "
        f"({len(pairs.held_out)} held out, {pairs.excluded} excluded as the experiments' prompts)"
    )
    with atomic_directory(folder) as tmp:
        record = _train(pairs, settings, tmp)
        write_atomic(tmp / RECORD_FILE, json.dumps(record, indent=1))
    say(f"gold reward model: held-out accuracy {record['accuracy']:.3f} on {record['held_out_pairs']} pairs")
    return _evaluator(folder, record, excluded_keys([*pairs.train, *pairs.held_out]), cached=False)


def gold_config(settings: GoldSettings, data_dir: Path, folder: Path) -> Any:
    """``train-rm``'s :class:`~preftune.reward.RewardConfig` for ``settings``, reading the pairs in ``data_dir``."""
    from preftune.reward import RewardConfig

    data = DataConfig(
        train=str(data_dir / TRAIN_FILE),
        eval=str(data_dir / HELD_OUT_FILE),
        train_size=settings.train_size,
        max_length=settings.max_length,
    )
    return RewardConfig(
        model=settings.model,
        output_dir=str(folder / "model"),
        data=data,
        lora_rank=settings.lora_rank,
        lora_last_layers=settings.lora_last_layers,
        epochs=settings.epochs,
        lr=settings.lr,
        batch_size=settings.batch_size,
        seed=settings.seed,
        precision="no",
    )


def _train(pairs: GoldPairs, settings: GoldSettings, folder: Path) -> dict[str, Any]:
    """Train the reward model into ``folder`` through ``train-rm``'s code; the record of what it did."""
    from preftune.reward import prepare, train_reward_model

    data_dir = folder / "data"
    data_dir.mkdir()
    write_atomic(data_dir / TRAIN_FILE, _rows(pairs.train))
    write_atomic(data_dir / HELD_OUT_FILE, _rows(pairs.held_out))
    result = train_reward_model(prepare(gold_config(settings, data_dir, folder)))
    after = result.after
    return {
        "settings": asdict(settings),
        "accuracy": after.accuracy,
        "accuracy_before": result.before.accuracy,
        "ties_half_wins": after.accuracy * after.pairs,
        "held_out_pairs": after.pairs,
        "train_pairs": len(pairs.train) if settings.train_size is None else min(settings.train_size, len(pairs.train)),
        "excluded_pairs": pairs.excluded,
        "source": pairs.source,
        "seconds": result.seconds,
    }


def _evaluator(folder: Path, record: dict[str, Any], keys: tuple[set[str], set[str]], cached: bool) -> GoldEvaluator:
    """The evaluator of a trained folder's record; ``keys``: its pairs' prompts, for :func:`check_disjoint`."""
    return GoldEvaluator(
        folder=folder / "model",
        accuracy=wilson(record["ties_half_wins"], record["held_out_pairs"]),
        accuracy_before=record["accuracy_before"],
        held_out_pairs=record["held_out_pairs"],
        train_pairs=record["train_pairs"],
        excluded_pairs=record["excluded_pairs"],
        source=record["source"],
        seconds=record["seconds"],
        cached=cached,
        keys=keys,
    )
