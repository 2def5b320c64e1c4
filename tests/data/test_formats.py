"""Formats (a)-(d): what each becomes, auto-detection, column names, and the real HH and OASST files."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from preftune.data import PreferenceExample, load_preference_data, load_rows, rank_pairs
from preftune.data.columns import guess_columns
from preftune.data.dialogues import parse_hh
from preftune.data.formats import detect_format
from preftune.data.load import NO_PAIR
from preftune.errors import PreftuneError
from tests.data.files import HH_FILE, OASST_FILE, write_jsonl


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def load(tmp_path: Path, rows: list[dict], name: str = "data.jsonl", **kwargs) -> list[PreferenceExample]:
    examples, summary = load_preference_data(write_jsonl(tmp_path / name, rows), **kwargs)
    assert summary.kept == len(examples)
    return examples


def test_a_standard_text_is_kept_as_strings(tmp_path: Path) -> None:
    rows = [{"prompt": "The sky is", "chosen": " blue.", "rejected": " green.", "extra": 1}]
    examples, summary = load_preference_data(write_jsonl(tmp_path / "std.jsonl", rows))
    assert summary.format == "standard" and summary.rows_read == 1
    (example,) = examples
    assert (example.prompt, example.chosen, example.rejected) == ("The sky is", " blue.", " green.")
    assert not example.is_conversational
    assert str(example.origin) == "std.jsonl row 1"


def test_b_conversational_keeps_messages(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"role": "system", "content": "Be brief."}, user("Sky color?")],
            "chosen": [assistant("Blue.")],
            "rejected": [assistant("Green.")],
        }
    ]
    (example,) = load(tmp_path, rows)
    assert example.is_conversational
    assert example.prompt == [{"role": "system", "content": "Be brief."}, user("Sky color?")]
    assert example.chosen == [assistant("Blue.")] and example.rejected == [assistant("Green.")]


def test_b_sharegpt_spelling_is_normalised(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": [{"from": "human", "value": "Hi"}],
            "chosen": [{"from": "gpt", "value": "Hello"}],
            "rejected": [{"from": "gpt", "value": "Go away"}],
        }
    ]
    (example,) = load(tmp_path, rows)
    assert example.prompt == [user("Hi")] and example.chosen == [assistant("Hello")]


def test_c_implicit_prompt_message_lists(tmp_path: Path) -> None:
    shared = [user("Hi"), assistant("Hello!"), user("Sky color?")]
    rows = [{"chosen": [*shared, assistant("Blue.")], "rejected": [*shared, assistant("Green.")]}]
    (example,) = load(tmp_path, rows)
    assert example.prompt == shared
    assert example.chosen == [assistant("Blue.")] and example.rejected == [assistant("Green.")]


def test_c_text_prompt_with_full_dialogues_follows_trl_and_extracts(tmp_path: Path) -> None:
    rows = [
        {
            "prompt": "Sky color?",
            "chosen": [user("Sky color?"), assistant("Blue.")],
            "rejected": [user("Sky color?"), assistant("Red.")],
        }
    ]
    (example,) = load(tmp_path, rows)
    assert example.prompt == [user("Sky color?")] and example.chosen == [assistant("Blue.")]


def test_c_dialogues_that_differ_before_the_last_turn_are_invalid(tmp_path: Path) -> None:
    rows = [{"chosen": [user("Hi"), assistant("Blue.")], "rejected": [user("Hello"), assistant("Green.")]}]
    with pytest.raises(PreftuneError) as excinfo:
        load(tmp_path, rows)
    assert str(excinfo.value) == (
        "data.jsonl row 1: field 'chosen/rejected': the two dialogues differ before their final assistant turn "
        "(at turn 1; the prompt must be their shared prefix)"
    )


def test_c_hh_transcript_parsing() -> None:
    text = "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: It is 6."
    assert parse_hh(text, "chosen") == [user("What is 2+2?"), assistant("4."), user("And 3+3?"), assistant("It is 6.")]
    assert parse_hh("Human: hi\n\nAssistant:", "chosen") == [user("hi"), assistant("")]


def test_c_hh_real_rows() -> None:
    examples, summary = load_preference_data(HH_FILE, skip_invalid=True)
    assert summary.format == "implicit" and summary.rows_read == 2312
    first = examples[0]
    assert [m["role"] for m in first.prompt] == ["user", "assistant", "user", "assistant", "user"]
    assert first.prompt[0] == user("what are some pranks with a pen i can do?")
    assert first.prompt[-1] == user("okay some of these do not have anything to do with pens")
    assert first.chosen == [
        assistant(
            "No, sorry!  All of these involve a pen, the point is that you can get funny results "
            "by doing pranks with pens."
        )
    ]
    assert first.rejected[0]["content"].startswith("There are lots of funny things you can do with pens")
    # 5 real rows have an extra "Human:" inside one response, so the dialogues disagree on the prompt;
    # 4 end with an empty chosen turn ("\n\nAssistant:" and nothing after it).
    assert summary.dropped == {
        "chosen/rejected: the two dialogues differ before their final assistant turn": 5,
        "chosen: empty string": 4,
    }
    assert summary.kept == 2312 - 9
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as handle:
        row = json.loads(handle.readline())
    assert all(m["content"] in row["chosen"] for m in first.prompt + first.chosen)


def test_c_hh_real_bad_rows_are_named(tmp_path: Path) -> None:
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(HH_FILE)  # the first bad row of the real file: an empty final chosen turn
    assert str(excinfo.value) == "hh-rlhf-harmless-base-test.jsonl.gz row 87: field 'chosen[0].content': empty string"
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as handle:
        row_1255 = json.loads(handle.readlines()[1254])
    with pytest.raises(PreftuneError) as excinfo:
        load(tmp_path, [row_1255], name="hh-1255.jsonl")
    assert str(excinfo.value) == (
        "hh-1255.jsonl row 1: field 'chosen/rejected': the two dialogues differ before their final assistant turn "
        "(at turn 4; the prompt must be their shared prefix)"
    )


@pytest.mark.parametrize(
    ("pairing", "expected"),
    [("best_vs_worst", [("A", "C")]), ("all", [("A", "B"), ("A", "C"), ("B", "C")])],
)
def test_d_ranked_completions(tmp_path: Path, pairing: str, expected: list[tuple[str, str]]) -> None:
    rows = [{"prompt": "Q?", "completions": ["B", "A", "C", "B2"], "ranks": [1, 0, 2, 1]}]
    examples = load(tmp_path, rows, pairing=pairing)
    got = [(e.chosen, e.rejected) for e in examples]
    if pairing == "all":  # B and B2 are tied: no pair between them
        expected = [("A", "B"), ("A", "C"), ("A", "B2"), ("B", "C"), ("B2", "C")]
        assert sorted(got) == sorted(expected)
    else:
        assert got == expected
    assert all(e.prompt == "Q?" for e in examples)
    assert examples[0].origin.part == ("completions 1 vs 2" if pairing == "best_vs_worst" else "completions 0 vs 2")


def test_d_scores_are_higher_better_and_ties_make_no_pair(tmp_path: Path) -> None:
    rows = [
        {"prompt": [user("Q?")], "completions": [[assistant("low")], [assistant("high")]], "scores": [0.1, 0.9]},
        {"prompt": [user("R?")], "completions": [[assistant("x")], [assistant("y")]], "scores": [0.5, 0.5]},
    ]
    examples, summary = load_preference_data(write_jsonl(tmp_path / "s.jsonl", rows), pairing="all")
    assert [(e.chosen, e.rejected) for e in examples] == [([assistant("high")], [assistant("low")])]
    assert summary.dropped == {NO_PAIR: 1}


def test_rank_pairs() -> None:
    assert rank_pairs([2, 0, 1], lower_is_better=True, pairing="best_vs_worst") == [(1, 0)]
    assert rank_pairs([2, 0, None, 1], lower_is_better=True, pairing="all") == [(1, 0), (1, 3), (3, 0)]
    assert rank_pairs([3.0, 3.0], lower_is_better=False, pairing="all") == []
    assert rank_pairs([None, None], lower_is_better=True, pairing="best_vs_worst") == []


@pytest.mark.parametrize(
    ("pairing", "tree_turns", "pairs"),
    [("all", "all", 754), ("all", "first", 438), ("best_vs_worst", "all", 212), ("best_vs_worst", "first", 99)],
)
def test_d_oasst_trees(pairing: str, tree_turns: str, pairs: int) -> None:
    # 754 = every ordered pair of distinct ranks among assistant siblings at every depth of the
    # 100 trees: 438 among the replies to the root prompts, 312 two turns deeper, 4 four deeper
    # (user follow-ups are not ranked). One tree's root replies carry no ranks at all.
    examples, summary = load_preference_data(OASST_FILE, pairing=pairing, tree_turns=tree_turns)
    assert summary.format == "oasst" and summary.rows_read == 100
    assert len(examples) == pairs
    assert summary.dropped == ({NO_PAIR: 1} if tree_turns == "first" else {})
    root = json.loads(OASST_FILE.read_text(encoding="utf-8").splitlines()[0])["prompt"]
    first = examples[0]
    assert first.prompt == [user(root["text"])]
    best = next(r for r in root["replies"] if r["rank"] == 0)
    assert first.chosen == [assistant(best["text"])]
    ranks = {r["text"]: r["rank"] for r in root["replies"]}
    for example in examples:
        assert [m["role"] for m in example.prompt][::2] == ["user"] * ((len(example.prompt) + 1) // 2)
        if len(example.prompt) == 1 and example.prompt[0]["content"] == root["text"]:
            assert ranks[example.chosen[0]["content"]] < ranks[example.rejected[0]["content"]]
    deep = [e for e in examples if len(e.prompt) == 3]
    assert (len(deep) > 0) == (tree_turns == "all")


def test_wrong_column_names_suggest_the_closest(tmp_path: Path) -> None:
    rows = [{"prompt": "Q", "chosen_response": "A", "rejected_response": "B"}]
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert str(excinfo.value) == (
        "data.jsonl: no 'chosen' column; found ['prompt', 'chosen_response', 'rejected_response']; "
        "map the file's columns onto the expected names, "
        "e.g. data.columns.chosen=chosen_response data.columns.rejected=rejected_response"
    )
    examples, _ = load_preference_data(path, columns={"chosen": "chosen_response", "rejected": "rejected_response"})
    assert (examples[0].chosen, examples[0].rejected) == ("A", "B")


def test_no_close_name_still_names_the_settings_for_every_missing_column(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Q", "good": "A", "bad": "B"}])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert str(excinfo.value) == (
        "qa.jsonl: no 'chosen' column; found ['question', 'good', 'bad']; map the file's columns onto the expected "
        "names, e.g. data.columns.prompt=question data.columns.chosen=good data.columns.rejected=bad"
    )
    examples, _ = load_preference_data(path, columns={"prompt": "question", "chosen": "good", "rejected": "bad"})
    assert (examples[0].prompt, examples[0].chosen, examples[0].rejected) == ("Q", "A", "B")
    # a column the guesses cannot place is left to the user; a column is never offered twice
    path = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "Q", "good_answer": "A", "other": "B"}])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path, format="standard")
    assert str(excinfo.value).endswith(
        "; map the file's columns onto the expected names, e.g. data.columns.chosen=good_answer "
        "data.columns.rejected=COLUMN"
    )
    assert guess_columns(["good", "better"], ("chosen",)) == {}  # two candidates: no guess
    assert guess_columns(["prompt", "x"], ("prompt", "chosen")) == {}  # present names need no guess


def test_labelled_and_unpaired_hints_name_their_own_settings(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "l.jsonl", [{"instruction": "Q", "answer_a": "A", "answer_b": "B", "label": 1}])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path, format="labelled")
    assert str(excinfo.value).endswith(
        "map the file's columns onto the expected names with data.columns.response_1=COLUMN "
        "data.columns.response_2=COLUMN"
    )
    examples, _ = load_preference_data(
        path, format="labelled", columns={"response_1": "answer_a", "response_2": "answer_b"}
    )
    assert (examples[0].chosen, examples[0].rejected) == ("A", "B")


def test_typo_in_column_name_and_in_mapping(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [{"promt": "Q", "chosen": "A", "rejected": "B"}])
    with pytest.raises(
        PreftuneError, match=r"no 'prompt' column .*found \['promt', 'chosen', 'rejected'\]; did you mean 'promt'\?"
    ):
        load_preference_data(path)
    with pytest.raises(
        PreftuneError,
        match=r"^t.jsonl: data.columns.prompt=prompts names no column; .* did you mean 'promt'\? "
        r"\(set data.columns.prompt=promt\)$",
    ):
        load_preference_data(path, columns={"prompt": "prompts"})


def test_detection(tmp_path: Path) -> None:
    def detect(row: dict) -> str:
        return detect_format(load_rows(write_jsonl(tmp_path / "x.jsonl", [row])))

    assert detect({"prompt": "a", "chosen": "b", "rejected": "c"}) == "standard"
    assert detect({"prompt": [user("a")], "chosen": [assistant("b")], "rejected": [assistant("c")]}) == "conversational"
    assert detect({"chosen": [user("a"), assistant("b")], "rejected": [user("a"), assistant("c")]}) == "implicit"
    assert detect({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}) == "implicit"
    assert detect({"prompt": "a", "completions": ["b", "c"], "ranks": [0, 1]}) == "ranked"
    with pytest.raises(PreftuneError, match="no 'prompt' column"):
        detect({"chosen": "plain b", "rejected": "plain c"})


def test_unknown_format_and_pairing(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "x.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}])
    with pytest.raises(PreftuneError, match="unknown data format 'trl'"):
        load_preference_data(path, format="trl")
    with pytest.raises(PreftuneError, match="unknown pairing 'best'"):
        load_preference_data(path, pairing="best")
