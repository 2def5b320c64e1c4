"""Labelled pairs (two responses and a label): AlpacaEval, LLMBar and PandaLM shapes, and the real PandaLM file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from preftune.data import LabelSpec, load_preference_data
from preftune.data.formats import detect_format
from preftune.data.sources import load_rows
from preftune.errors import PreftuneError
from tests.data.files import PANDALM_FILE, write_jsonl


def alpaca_row(i: int, preference: float | int | None) -> dict:
    return {
        "instruction": f"Question {i}?",
        "output_1": f"answer A{i}",
        "output_2": f"answer B{i}",
        "preference": preference,
        "annotator": "weighted_alpaca_eval_gpt4_turbo",
    }


def test_alpaca_eval_preferences_choose_the_labelled_response(tmp_path: Path) -> None:
    preferences = [1, 2, 2.0, 1.5, 0, 1.2, 1.9, 1.0]
    path = write_jsonl(tmp_path / "alpaca.jsonl", [alpaca_row(i, p) for i, p in enumerate(preferences)])
    examples, summary = load_preference_data(path)
    assert summary.format == "labelled" and summary.rows_read == 8
    # 1 and 1.2 (nearer 1) and 1.0: output_1 better; 2, 2.0 and 1.9: output_2; 1.5 and 0: ties, dropped.
    assert [(e.origin.row, e.chosen, e.rejected) for e in examples] == [
        (1, "answer A0", "answer B0"),
        (2, "answer B1", "answer A1"),
        (3, "answer B2", "answer A2"),
        (6, "answer A5", "answer B5"),
        (7, "answer B6", "answer A6"),
        (8, "answer A7", "answer B7"),
    ]
    assert all(e.prompt == f"Question {e.origin.row - 1}?" for e in examples)
    assert summary.dropped == {"label: tie (neither response better)": 2}
    assert summary.labels == {"first": 3, "second": 3, "tie": 2, "weighted": 3}
    assert "labels: 3 first better, 3 second better, 2 ties (3 weighted)" in str(summary)
    assert summary.to_dict()["labels"]["tie"] == 2


def test_llmbar_labels_and_input_as_prompt(tmp_path: Path) -> None:
    rows = [
        {"input": "Sort 3, 1, 2.", "output_1": "1, 2, 3", "output_2": "3, 2, 1", "label": 1},
        {"input": "Capital of France?", "output_1": "Lyon", "output_2": "Paris", "label": 2},
    ]
    examples, summary = load_preference_data(write_jsonl(tmp_path / "llmbar.jsonl", rows))
    assert [(e.prompt, e.chosen, e.rejected) for e in examples] == [
        ("Sort 3, 1, 2.", "1, 2, 3", "3, 2, 1"),
        ("Capital of France?", "Paris", "Lyon"),
    ]
    assert summary.labels == {"first": 1, "second": 1, "tie": 0}


def test_annotators_vote_and_no_majority_is_a_tie(tmp_path: Path) -> None:
    def row(votes: tuple[str, str, str], input_: str = "") -> dict:
        base = {"instruction": "Say hi.", "input": input_, "response1": "Hi!", "response2": "Go away."}
        return base | {f"annotator{i + 1}": v for i, v in enumerate(votes)}

    rows = [row(("1", "1", "1")), row(("2", "1", "2"), "to a friend"), row(("1", "2", "0")), row(("0", "0", "1"))]
    examples, summary = load_preference_data(write_jsonl(tmp_path / "panda.jsonl", rows))
    assert [(e.origin.row, e.chosen) for e in examples] == [(1, "Hi!"), (2, "Go away.")]
    assert examples[0].prompt == "Say hi."  # an empty input adds nothing
    assert examples[1].prompt == "Say hi.\n\nto a friend"  # a non-empty one follows after a blank line
    assert summary.labels == {"first": 1, "second": 1, "tie": 2, "not_unanimous": 3, "no_majority": 1}
    assert summary.dropped == {"label: tie (neither response better)": 2}


def test_real_pandalm_file_against_an_independent_count() -> None:
    raw = json.loads(PANDALM_FILE.read_text(encoding="utf-8"))
    votes = [[int(r[f"annotator{k}"]) for k in (1, 2, 3)] for r in raw]
    winners = [Counter(v).most_common(1)[0] for v in votes]
    outcome = [value if n >= 2 else 0 for value, n in winners]  # 2 of 3 annotators make a majority
    expected_dropped: Counter[str] = Counter()
    expected_pairs = []
    for r, o in zip(raw, outcome, strict=True):
        if o == 0:
            expected_dropped["label: tie (neither response better)"] += 1
            continue
        problem = None
        for field in ("response1", "response2"):  # the first problem, in column order
            value = r[field]
            if not isinstance(value, str):
                problem = f"{field}: expected a string, got {type(value).__name__}"
            elif not value.strip():
                problem = f"{field}: empty string" + ("" if value == "" else " (only whitespace)")
            if problem:
                break
        if problem:
            expected_dropped[problem] += 1
            continue
        # The non-blank parts of instruction and input, joined by a blank line (one real row has
        # an instruction of one space and its text in the input).
        prompt = "\n\n".join(part for part in (r["instruction"], r["input"]) if part.strip())
        expected_pairs.append((prompt, r[f"response{o}"], r[f"response{3 - o}"]))

    examples, summary = load_preference_data(PANDALM_FILE, skip_invalid=True)
    assert summary.format == "labelled" and summary.rows_read == len(raw) == 999
    assert [(e.prompt, e.chosen, e.rejected) for e in examples] == expected_pairs
    assert summary.dropped == dict(expected_dropped)
    assert summary.labels == {
        "first": outcome.count(1),
        "second": outcome.count(2),
        "tie": outcome.count(0),
        "not_unanimous": sum(len(set(v)) > 1 for v in votes),
    }
    # The figures themselves, so that a change in the file or the rules shows here.
    assert (outcome.count(1), outcome.count(2), outcome.count(0)) == (422, 472, 105)
    assert summary.kept == 836
    with pytest.raises(PreftuneError, match=r"^pandalm-testset-v1.json row 19: field 'response1': empty string$"):
        load_preference_data(PANDALM_FILE)


def test_unrecognised_label_is_a_row_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [alpaca_row(0, 1), alpaca_row(1, 3), alpaca_row(2, None)])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert str(excinfo.value) == (
        "bad.jsonl row 2: field 'preference': unrecognised label "
        "(got 3 (int); expected 1 (output_1 better), 2 (output_2 better) or 0 (tie))"
    )
    examples, summary = load_preference_data(path, skip_invalid=True)
    assert len(examples) == 1
    assert summary.dropped == {"preference: unrecognised label": 1, "preference: missing value (null)": 1}


def test_two_responses_without_a_label_name_the_setting(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "nolabel.jsonl", [{"instruction": "Q", "output_1": "a", "output_2": "b"}])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert str(excinfo.value) == (
        "nolabel.jsonl: two responses ('output_1', 'output_2') but no label column saying which is better "
        "(looked for 'label', 'preference', 'annotatorN'); found ['instruction', 'output_1', 'output_2']; "
        "set data.labels.column=NAME"
    )


def test_mapping_chosen_onto_output_1_is_refused_when_a_label_decides(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "alpaca.jsonl", [alpaca_row(0, 2)])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path, columns={"prompt": "instruction", "chosen": "output_1", "rejected": "output_2"})
    assert str(excinfo.value).startswith(
        "alpaca.jsonl: data.columns maps chosen and rejected onto 'output_1' and 'output_2', but 'preference' "
        "says which of them is better"
    )
    kept, _ = load_preference_data(
        path, format="standard", columns={"prompt": "instruction", "chosen": "output_1", "rejected": "output_2"}
    )
    assert kept[0].chosen == "answer A0"  # an explicit format keeps the mapping, as asked


def test_custom_label_spec_and_column_mapping(tmp_path: Path) -> None:
    rows = [
        {"question": "Q1", "answer_a": "x", "answer_b": "y", "winner": "model_b"},
        {"question": "Q2", "answer_a": "u", "answer_b": "v", "winner": "Model_A"},
        {"question": "Q3", "answer_a": "s", "answer_b": "t", "winner": "tie"},
    ]
    path = write_jsonl(tmp_path / "arena.jsonl", rows)
    columns = {"prompt": "question", "response_1": "answer_a", "response_2": "answer_b"}
    spec = LabelSpec(column="winner", first="model_a", second="model_b", tie="tie")
    examples, summary = load_preference_data(path, columns=columns, labels=spec)
    assert [(e.prompt, e.chosen, e.rejected) for e in examples] == [("Q1", "y", "x"), ("Q2", "u", "v")]
    assert summary.labels == {"first": 1, "second": 1, "tie": 1}
    mapped, _ = load_preference_data(
        path, columns={**columns, "label": "winner"}, labels={"first": "model_a", "second": "model_b", "tie": "tie"}
    )
    assert [e.chosen for e in mapped] == ["y", "u"]


def test_reversed_numeric_labels_weigh_the_other_way(tmp_path: Path) -> None:
    rows = [alpaca_row(0, 1.1), alpaca_row(1, 1.9)]
    examples, _ = load_preference_data(write_jsonl(tmp_path / "r.jsonl", rows), labels=LabelSpec(first="2", second="1"))
    assert [e.chosen for e in examples] == ["answer B0", "answer A1"]  # 1.1 is nearer 1, which now means output_2


def test_label_spec_checks_and_coercion() -> None:
    assert LabelSpec.coerce(None) == LabelSpec()
    assert LabelSpec.coerce({"first": 1, "second": 2, "tie": None}) == LabelSpec(tie=None)

    class Config:  # what a structured config object looks like to the loader
        column = "annotator1,annotator2"
        first = "1"
        second = "2"
        tie = "0"

    assert LabelSpec.coerce(Config()).column == "annotator1,annotator2"
    with pytest.raises(PreftuneError, match=r"^data.labels.first and data.labels.second are both '1'$"):
        LabelSpec(first="1", second="1.0")
    with pytest.raises(PreftuneError, match=r"^data.labels: unknown key 'secnd'"):
        LabelSpec.coerce({"secnd": "2"})


def test_detection_of_labelled_rows(tmp_path: Path) -> None:
    def detect(row: dict) -> str:
        return detect_format(load_rows(write_jsonl(tmp_path / "x.jsonl", [row])))

    assert detect(alpaca_row(0, 1)) == "labelled"
    assert detect({"prompt": "a", "response_1": "b", "response_2": "c", "label": 1}) == "labelled"
    assert detect({"prompt": "a", "chosen": "b", "rejected": "c", "output_1": "d", "output_2": "e"}) == "standard"
