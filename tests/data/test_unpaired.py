"""(e) Unpaired good and bad examples from separate sets (P1's setting)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from preftune.data import collate, load_unpaired, tokenize_examples
from preftune.errors import PreftuneError
from tests.data.files import write_jsonl

GOOD = [{"prompt": f"good prompt {i}", "completion": f"good answer {i}"} for i in range(5)]
BAD = [{"prompt": f"bad prompt {i}", "completion": f"bad answer {i}"} for i in range(2)]


def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "good.jsonl", GOOD), write_jsonl(tmp_path / "bad.jsonl", BAD)


def test_pairs_cycle_the_shorter_set(tmp_path: Path) -> None:
    good, bad = files(tmp_path)
    examples, summary = load_unpaired(good, bad, seed=3)
    assert len(examples) == summary.kept == 5 and summary.rows_read == 7
    assert sorted(e.chosen for e in examples) == [g["completion"] for g in GOOD]  # each good once
    assert Counter(e.rejected for e in examples) == {"bad answer 0": 3, "bad answer 1": 2} or Counter(
        e.rejected for e in examples
    ) == {"bad answer 0": 2, "bad answer 1": 3}
    for e in examples:  # chosen and rejected come from different rows, each with its own prompt
        assert e.prompt == e.chosen.replace("answer", "prompt")
        assert e.rejected_prompt == e.rejected.replace("answer", "prompt")
        assert e.origin.source == "good.jsonl" and e.rejected_origin.source == "bad.jsonl"
        assert not e.is_paired
    assert summary.notes == ("unpaired: 5 good, 2 bad examples; bad set cycled (seed 3)",)


def test_seeded(tmp_path: Path) -> None:
    good, bad = files(tmp_path)
    first, _ = load_unpaired(good, bad, seed=1)
    again, _ = load_unpaired(good, bad, seed=1)
    other, _ = load_unpaired(good, bad, seed=2)
    assert first == again
    assert [e.chosen for e in first] != [e.chosen for e in other]


def test_one_source_with_labels(tmp_path: Path) -> None:
    rows = [{**g, "label": True} for g in GOOD[:2]] + [{**b, "label": False} for b in BAD]
    examples, _ = load_unpaired(write_jsonl(tmp_path / "kto.jsonl", rows))
    assert sorted(e.chosen for e in examples) == ["good answer 0", "good answer 1"]
    assert sorted(e.rejected for e in examples) == ["bad answer 0", "bad answer 1"]


def test_bad_rows_and_columns(tmp_path: Path) -> None:
    good, _ = files(tmp_path)
    bad = write_jsonl(tmp_path / "bad.jsonl", [*BAD, {"prompt": "p", "completion": ""}])
    with pytest.raises(PreftuneError, match=r"^bad.jsonl row 3: field 'completion': empty string$"):
        load_unpaired(good, bad)
    examples, summary = load_unpaired(good, bad, skip_invalid=True)
    assert summary.dropped == {"completion: empty string": 1} and len(examples) == 5
    wrong = write_jsonl(tmp_path / "wrong.jsonl", [{"prompt": "p", "response": "r"}])
    with pytest.raises(
        PreftuneError,
        match=r"no 'completion' column; found \['prompt', 'response'\]; did you mean 'response'\? "
        r"\(set data.columns.completion=response\)$",
    ):
        load_unpaired(good, wrong)
    good_renamed = write_jsonl(tmp_path / "g2.jsonl", [{"prompt": "q", "response": "a"}])
    examples, _ = load_unpaired(good_renamed, wrong, columns={"completion": "response"})  # applies to both
    assert [(e.chosen, e.rejected) for e in examples] == [("a", "r")]


def test_rejected_rows_use_their_own_prompt(tmp_path: Path, chatml_tokenizer) -> None:
    good, bad = files(tmp_path)
    examples, _ = load_unpaired(good, bad)
    pairs, _ = tokenize_examples(examples[:2], chatml_tokenizer, max_length=64)
    batch = collate(pairs, [0, 1], pad_id=chatml_tokenizer.pad_token_id)
    tok = chatml_tokenizer
    for i, example in enumerate(examples[:2]):
        chosen_row = tok.decode(batch.input_ids[i][batch.attention_mask[i].bool()])
        rejected_row = tok.decode(batch.input_ids[2 + i][batch.attention_mask[2 + i].bool()])
        assert chosen_row == example.prompt + example.chosen + "<|im_end|>"
        assert rejected_row == example.rejected_prompt + example.rejected + "<|im_end|>"
