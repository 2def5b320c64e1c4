"""The data summary says what was really used: train_size cuts, label counts and the hold-out carried through."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from preftune.data import DataSummary, hold_out, load_preference_data, tokenize_examples
from preftune.data.summary import NOT_USED
from tests.data.files import write_jsonl

ROWS = [
    {"prompt": "Sky color? " + "Tell me. " * (i % 4), "chosen": "It is blue." * (1 + i % 3), "rejected": "No."}
    for i in range(12)
]


def test_limited_counts_only_the_pairs_used(tmp_path: Path, chatml_tokenizer: Any) -> None:
    examples, loaded = load_preference_data(write_jsonl(tmp_path / "d.jsonl", ROWS))
    pairs, summary = tokenize_examples(examples, chatml_tokenizer, max_length=20, max_prompt_length=10, summary=loaded)
    assert summary.kept == 12 and summary.truncated_prompts > 0
    used = pairs[:5]
    limited = summary.limited(used)
    # The same counts as tokenising only the first five examples in the first place.
    _, alone = tokenize_examples(examples[:5], chatml_tokenizer, max_length=20, max_prompt_length=10)
    assert limited.kept == 5
    assert limited.truncated_prompts == alone.truncated_prompts > 0
    assert limited.truncated_responses == alone.truncated_responses
    assert limited.lengths == alone.lengths != summary.lengths
    assert limited.dropped == {NOT_USED: 7}
    assert limited.rows_read == 12 and limited.source == "d.jsonl" and limited.format == "standard"
    assert summary.limited(pairs) == summary  # nothing cut, nothing changed
    with pytest.raises(TypeError, match="takes the pairs used"):
        summary.limited(5)  # type: ignore[arg-type]
    assert json.loads(json.dumps(limited.to_dict()))["dropped"][NOT_USED] == 7


def test_labels_and_split_survive_tokenisation(tmp_path: Path, chatml_tokenizer: Any) -> None:
    rows = [
        {"instruction": f"Q{i}", "output_1": "blue", "output_2": "green", "preference": [1, 2, 1.5][i % 3]}
        for i in range(9)
    ]
    examples, loaded = load_preference_data(write_jsonl(tmp_path / "judged.jsonl", rows))
    train, _, split = hold_out(examples, 2)
    _, summary = tokenize_examples(train, chatml_tokenizer, max_length=64, summary=loaded.with_split(split))
    assert summary.labels == {"first": 3, "second": 3, "tie": 3, "weighted": 3}  # 1.5: weighted, halfway
    assert summary.split == split and summary.kept == 4
    data = summary.to_dict()
    assert data["labels"]["tie"] == 3 and data["split"]["held_out"] == 2
    assert data["dropped"] == {"label: tie (neither response better)": 3}
    text = str(summary)
    assert "labels: 3 first better, 3 second better, 3 ties" in text and "held out 2 of 6 pairs" in text


def test_plain_summary_has_no_label_or_split_lines() -> None:
    summary = DataSummary("d.jsonl", "standard", 3, 3)
    assert str(summary) == "d.jsonl (standard): 3 rows read, 3 pairs kept, 0 dropped"
    assert summary.to_dict()["labels"] == {} and summary.to_dict()["split"] is None
