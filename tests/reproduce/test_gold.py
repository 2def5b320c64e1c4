"""The gold evaluator: its pairs avoid every prompt the experiments use, it trains through ``train-rm``'s
code on the tiny model, and a second call reuses the cached model."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from preftune.data import bundled_path, load_preference_data
from preftune.errors import PreftuneError
from preftune.reproduce.gold import (
    DEFAULT_SOURCE,
    GoldSettings,
    check_disjoint,
    ensure_gold,
    excluded_keys,
    first_turn,
    gold_pairs,
    overlaps,
)
from preftune.reproduce.rules import evaluator_usable


def _bundled_rows(count: int) -> list[str]:
    with gzip.open(bundled_path("hh-harmless"), "rt", encoding="utf-8") as handle:
        return [line for _, line in zip(range(count), handle, strict=False)]


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """40 HH-RLHF rows (the bundled file's first 40) as a small gold source."""
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(_bundled_rows(40)), encoding="utf-8")
    return path


def test_gold_pairs_avoid_the_excluded_prompts_and_split_by_prompt(source: Path) -> None:
    examples, _ = load_preference_data(source)
    used = examples[:15]
    pairs = gold_pairs(used, held_out=5, source=source)
    gold = [*pairs.train, *pairs.held_out]
    keys = excluded_keys(used)
    assert gold and not any(overlaps(e, keys) for e in gold)
    assert pairs.excluded >= 15 and len(gold) + pairs.excluded == len(examples)
    train_turns = {first_turn(e) for e in pairs.train}
    assert len(pairs.held_out) >= 5 and not any(first_turn(e) in train_turns for e in pairs.held_out)
    check_disjoint(pairs, used, "the experiment's pairs")  # what was excluded is disjoint
    with pytest.raises(PreftuneError, match="shares a prompt with the gold"):
        check_disjoint(pairs, [pairs.train[0]], "the experiment's training pairs")


def test_a_prompt_is_excluded_by_its_first_turn_too(source: Path) -> None:
    """A multi-turn prompt that continues an excluded conversation shares its first turn: left out."""
    examples, _ = load_preference_data(source)
    longer = next(e for e in examples if len(e.prompt) > 1)
    opening = type(longer)([longer.prompt[0]], longer.chosen, longer.rejected, longer.origin)
    assert overlaps(longer, excluded_keys([opening]))


@pytest.mark.skipif(not DEFAULT_SOURCE.is_file(), reason="the shared HH-RLHF test split is not on this machine")
def test_the_real_gold_pairs_share_no_prompt_with_the_bundled_subset() -> None:
    bundled, _ = load_preference_data(bundled_path("hh-harmless"))
    pairs = gold_pairs(bundled, held_out=200)
    check_disjoint(pairs, bundled, "the bundled subset")  # raises on any shared prompt or first turn
    assert len(pairs.train) + len(pairs.held_out) > 1000 and len(pairs.held_out) >= 200


def test_gold_model_trains_on_the_tiny_model_and_is_cached(source: Path, tmp_path: Path) -> None:
    cache = tmp_path / "gold"
    examples, _ = load_preference_data(source)
    settings = GoldSettings(model="tiny-random", held_out=6, max_length=64, batch_size=4, lora_rank=4)
    lines: list[str] = []
    gold = ensure_gold(settings, examples[:15], say=lines.append, source=source, cache=cache)
    assert not gold.cached and gold.held_out_pairs >= 6 and gold.train_pairs > 0
    assert 0.0 <= gold.accuracy.low <= gold.accuracy.estimate <= gold.accuracy.high <= 1.0
    assert gold.above_chance == evaluator_usable(gold.accuracy)
    scores = gold.scorer(batch_size=4).score(["Hello?", "Hello?"], ["Hi.", "Go away."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    again = ensure_gold(settings, examples[:15], say=lines.append, source=source, cache=cache)
    assert again.cached and again.folder == gold.folder and again.accuracy == gold.accuracy
    assert any("cached" in line for line in lines)
    record = json.loads((gold.folder.parent / "gold.json").read_text(encoding="utf-8"))
    assert record["settings"]["model"] == "tiny-random"
    reseeded = GoldSettings(**{**settings.__dict__, "seed": 1})
    other = ensure_gold(reseeded, examples[:15], say=print, source=source, cache=cache)
    assert other.folder != gold.folder  # other settings, another cache entry


@pytest.mark.parametrize("scale", ["test", "small", "full"])
def test_every_scale_s_gold_settings_make_a_valid_train_rm_config(scale: str, tmp_path: Path) -> None:
    """``small`` and ``full`` never train in the suite: their train-rm configs pass its own checks."""
    from preftune.reproduce.gold import GOLD_SCALES, gold_config
    from preftune.reward.config import check_config

    settings = GOLD_SCALES[scale]
    config = gold_config(settings, tmp_path / "data", tmp_path / "gold")
    check_config(config)
    assert config.data.max_length == settings.max_length and config.lora_last_layers == settings.lora_last_layers
    if scale == "small":  # sized for two CPU cores in each paper's 30 minutes (all ~840 pairs, one epoch: 787 s)
        assert settings.lora_last_layers <= 4 and settings.max_length <= 192 and settings.epochs == 1
