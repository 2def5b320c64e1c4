"""Every bad row gives one line naming file, row, field and problem; skip_invalid counts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from preftune.data import load_preference_data
from preftune.errors import PreftuneError
from tests.data.files import write_jsonl

GOOD_TEXT = {"prompt": "Q?", "chosen": "Yes.", "rejected": "No."}
U, A = "user", "assistant"
GOOD_CHAT = {
    "prompt": [{"role": U, "content": "Q?"}],
    "chosen": [{"role": A, "content": "Yes."}],
    "rejected": [{"role": A, "content": "No."}],
}


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({**GOOD_TEXT, "chosen": ""}, "field 'chosen': empty string"),
        ({**GOOD_TEXT, "prompt": "   \n"}, "field 'prompt': empty string (only whitespace)"),
        ({**GOOD_TEXT, "rejected": "Yes."}, "field 'rejected': chosen is identical to rejected"),
        ({**GOOD_TEXT, "chosen": 42}, "field 'chosen': expected a string, got int"),
        ({**GOOD_TEXT, "rejected": None}, "field 'rejected': missing value (null)"),
    ],
)
def test_bad_text_rows(tmp_path: Path, bad: dict, expected: str) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", [GOOD_TEXT, GOOD_TEXT, bad, GOOD_TEXT])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert str(excinfo.value) == f"bad.jsonl row 3: {expected}"


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({**GOOD_CHAT, "chosen": [{"content": "Yes."}]}, "field 'chosen[0]': message has no 'role'"),
        ({**GOOD_CHAT, "prompt": [{"role": U}]}, "field 'prompt[0]': message has no 'content'"),
        ({**GOOD_CHAT, "chosen": [{"role": A, "content": " "}]}, "field 'chosen[0].content': empty string"),
        ({**GOOD_CHAT, "rejected": []}, "field 'rejected': empty response (no messages)"),
        ({**GOOD_CHAT, "rejected": GOOD_CHAT["chosen"]}, "field 'rejected': chosen is identical to rejected"),
        (
            {**GOOD_CHAT, "chosen": [{"role": U, "content": "Yes."}]},
            "field 'chosen[0].role': a response must start with an assistant turn, not user",
        ),
        (
            {**GOOD_CHAT, "prompt": [{"role": A, "content": "Q?"}]},
            "field 'prompt[-1].role': a prompt must end with a user turn, not assistant",
        ),
        (
            {**GOOD_CHAT, "prompt": [{"role": "wizard", "content": "Q?"}]},
            "field 'prompt[0].role': unknown role ('wizard'; expected one of system, user, assistant, tool)",
        ),
        ({**GOOD_CHAT, "chosen": "Yes."}, "field 'chosen': expected a list of messages, got str"),
    ],
)
def test_bad_conversational_rows(tmp_path: Path, bad: dict, expected: str) -> None:
    path = write_jsonl(tmp_path / "chat.jsonl", [GOOD_CHAT, bad])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert str(excinfo.value) == f"chat.jsonl row 2: {expected}"


def test_line_breaks_in_values_stay_on_one_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "nl.jsonl", [{"prompt": "Q", "chosen": "a\nb", "rejected": "a\nb"}])
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path)
    assert "\n" not in str(excinfo.value)


def test_skip_invalid_counts_by_reason(tmp_path: Path) -> None:
    rows = [
        GOOD_TEXT,
        {**GOOD_TEXT, "chosen": ""},
        {**GOOD_TEXT, "rejected": "Yes."},
        GOOD_TEXT,
        {**GOOD_TEXT, "chosen": ""},
        {**GOOD_TEXT, "prompt": 3},
    ]
    examples, summary = load_preference_data(write_jsonl(tmp_path / "mixed.jsonl", rows), skip_invalid=True)
    assert len(examples) == summary.kept == 2
    assert [e.origin.row for e in examples] == [1, 4]
    assert summary.rows_read == 6
    assert summary.dropped == {
        "chosen: empty string": 2,
        "rejected: chosen is identical to rejected": 1,
        "prompt: expected a string, got int": 1,
    }
    text = str(summary)
    assert "6 rows read, 2 pairs kept, 4 dropped" in text and "dropped 2: chosen: empty string" in text
    assert summary.to_dict()["dropped"]["chosen: empty string"] == 2


def test_skip_invalid_with_nothing_left(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "none.jsonl", [{**GOOD_TEXT, "chosen": ""}] * 2)
    with pytest.raises(PreftuneError) as excinfo:
        load_preference_data(path, skip_invalid=True)
    assert str(excinfo.value) == "none.jsonl: no valid rows left (2 dropped: chosen: empty string x2)"
