"""Held-out pairs without leakage: duplicates and shared prompts never straddle the split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from preftune.data import PreferenceExample, hold_out, load_preference_data
from preftune.data.split import pair_key, prompt_key
from preftune.errors import PreftuneError
from tests.data.files import write_jsonl


def doubled_file(tmp_path: Path, n: int = 10) -> Path:
    """``n`` distinct pairs, each written twice (the second copy after all the first ones)."""
    rows = [{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(n)]
    return write_jsonl(tmp_path / "doubled.jsonl", rows + rows)


def keys(examples: list[PreferenceExample]) -> set[str]:
    return {pair_key(e) for e in examples}


def test_every_pair_twice_no_held_out_pair_is_trained_on(tmp_path: Path) -> None:
    examples, _ = load_preference_data(doubled_file(tmp_path))
    train, held, summary = hold_out(examples, 4)
    assert len(held) == 4 and len(train) == 16
    assert not keys(held) & keys(train)
    assert summary.duplicate_pairs == 10 and summary.groups == 10 and summary.shared_groups == 10
    assert summary.held_out_groups == 2 and summary.largest_group == 2
    # The old split (a seeded shuffle of row indices) would have leaked here: check that it does,
    # so that this test guards against returning to it.
    import random

    order = list(range(len(examples)))
    random.Random(0).shuffle(order)
    old_held = [examples[i] for i in order[:4]]
    old_train = [examples[i] for i in order[4:]]
    assert keys(old_held) & keys(old_train)


def test_shared_prompts_never_straddle_and_group_by_pair_splits_them(tmp_path: Path) -> None:
    rows = [{"prompt": f"P{i % 5}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(20)]
    examples, _ = load_preference_data(write_jsonl(tmp_path / "shared.jsonl", rows))
    for seed in range(5):
        train, held, summary = hold_out(examples, 6, seed=seed)
        assert not {prompt_key(e) for e in held} & {prompt_key(e) for e in train}
        assert len(held) == 8 and summary.held_out_groups == 2  # whole groups of 4: 6 asked, 8 held out
        assert len(held) + len(train) == 20
    train, held, summary = hold_out(examples, 6, group_by="pair")
    assert len(held) == 6 and summary.groups == 20 and summary.duplicate_pairs == 0
    assert {prompt_key(e) for e in held} & {prompt_key(e) for e in train}  # only identical pairs stay together


def test_messages_compare_by_content_not_key_order(tmp_path: Path) -> None:
    a = {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}]}
    b = {"prompt": [{"content": "Hi", "role": "user"}], "chosen": [{"content": "Hello", "role": "assistant"}]}
    rejected = [{"role": "assistant", "content": "No."}]
    path = write_jsonl(tmp_path / "chat.jsonl", [{**a, "rejected": rejected}, {**b, "rejected": rejected}])
    examples, _ = load_preference_data(path)
    assert len({pair_key(e) for e in examples}) == 1
    text = PreferenceExample("Hi", "Hello", "No.", examples[0].origin)
    assert pair_key(text) != pair_key(examples[0])  # a text prompt never matches a message list


def test_deterministic_and_in_source_order(tmp_path: Path) -> None:
    examples, _ = load_preference_data(doubled_file(tmp_path, 30))
    first = hold_out(examples, 10)
    again = hold_out(list(examples), 10)
    assert first == again
    held = first[1]
    assert [e.origin.row for e in held] == sorted(e.origin.row for e in held)
    other = hold_out(examples, 10, seed=1)[1]
    assert keys(other) != keys(held)  # the seed does choose


def test_eval_size_limits(tmp_path: Path) -> None:
    examples, _ = load_preference_data(doubled_file(tmp_path, 3))
    train, held, summary = hold_out(examples, 0)
    assert held == [] and train == examples and summary.held_out == 0
    with pytest.raises(PreftuneError, match=r"^data.eval_size must be 0 or more, not -1$"):
        hold_out(examples, -1)
    with pytest.raises(PreftuneError, match=r"^data.eval_size 6 leaves no training pairs out of 6$"):
        hold_out(examples, 6)
    with pytest.raises(PreftuneError) as excinfo:  # 5 < 6, but whole groups of 2 take all 6
        hold_out(examples, 5)
    assert str(excinfo.value) == (
        "data.eval_size 5 leaves no training pairs: the 6 pairs form only 3 groups by prompt and whole groups "
        "are held out; lower data.eval_size"
    )
    with pytest.raises(PreftuneError, match=r"^unknown data.split_by 'row'"):
        hold_out(examples, 1, group_by="row")


def test_summary_line_and_dict(tmp_path: Path) -> None:
    examples, summary = load_preference_data(doubled_file(tmp_path))
    _, _, split = hold_out(examples, 4)
    assert str(split) == (
        "held out 4 of 20 pairs (asked 4) in 2 whole groups by prompt (seed 0), 16 for training; 10 groups, "
        "10 of several pairs (largest 2); 10 duplicate pairs (kept)"
    )
    with_split = summary.with_split(split)
    assert with_split.to_dict()["split"]["duplicate_pairs"] == 10
    assert json.loads(json.dumps(with_split.to_dict()))["split"]["held_out"] == 4
    assert str(split) in str(with_split)


@pytest.mark.parametrize(("pairs", "held"), [(40, 4), (9, 0), (3000, 100)])
def test_an_unset_eval_size_holds_out_a_tenth_at_most_100(tmp_path: Path, pairs: int, held: int) -> None:
    """Unset, data.eval_size adapts to the data (a 40-pair file keeps 36 for training instead of being
    refused), and the summary says it chose."""
    rows = [{"prompt": f"Question {i}?", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(pairs)]
    examples, _ = load_preference_data(write_jsonl(tmp_path / "pairs.jsonl", rows))
    train, held_out, split = hold_out(examples, None)
    assert len(held_out) == held and len(train) == pairs - held and split.auto
    assert f"held out {held} of {pairs} pairs (data.eval_size unset: a tenth, at most 100)" in str(split)
    assert split.to_dict()["auto"] is True
